"""From NeMo modules to ONNX graphs: the encoder prepared for any length and attention, each graph exported without
the exporter writing its weights, the weights written while the export runs, and the written files checked against
PyTorch.
"""
