"""Convert NeMo transducer checkpoints into sherpa-onnx model directories.

Importing this package is cheap; NeMo and torch are imported only when a conversion loads or exports a model.
"""

from nemo2sherpa.convert.pipeline import ConvertOptions, ConvertResult, convert

__all__ = ["ConvertOptions", "ConvertResult", "convert"]
