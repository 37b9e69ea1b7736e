"""Convert NeMo checkpoints into model directories: read the source (nemo2sherpa.checkpoint), export each family's
graphs (export/), run the graph passes (passes/), write the precision variants (nemo2sherpa.precision), move into place.

Importing this package is cheap; NeMo and torch are imported only when a conversion loads or exports a model.
"""

from nemo2sherpa.convert.pipeline import ConvertOptions, ConvertResult, convert

__all__ = ["ConvertOptions", "ConvertResult", "convert"]
