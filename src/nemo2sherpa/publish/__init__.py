"""Publish a validated model directory to Hugging Face with a model card that carries its proof.

No NeMo, no torch: publishing needs the directory, its manifest and its validation report. huggingface_hub is
imported only when something is uploaded; a dry run (--dry-run STAGING) needs no network and no Hub library.
"""

from nemo2sherpa.publish.pipeline import PublishOptions, PublishResult, publish

__all__ = ["PublishOptions", "PublishResult", "publish"]
