"""ONNX graphs on disk and in memory: walking their stored tensors, editing nodes, rewriting them tensor by tensor,
and writing them (one external-data file, hashed while written). Used by convert's export and passes, by the
precision variants, and by validate's contract check.
"""
