"""Publish a validated model directory to Hugging Face with a model card that carries its proof.

No NeMo, no torch: publishing needs the directory, its manifest and its validation report.
"""
