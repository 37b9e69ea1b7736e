"""Graph passes over the exported encoder: rewrites that measurably speed up sherpa-onnx and keep its transcripts."""
