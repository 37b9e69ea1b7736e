"""nemo2sherpa: NeMo transducer checkpoints in, faithful sherpa-onnx model directories out."""

__version__ = "0.1.0"
