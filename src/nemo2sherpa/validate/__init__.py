"""Judge a sherpa-onnx NeMo transducer directory: contract, fidelity against NeMo, transcripts, providers, speed.

Nothing here imports NeMo or torch at import time: a user who only validates a directory does not need them.
"""
