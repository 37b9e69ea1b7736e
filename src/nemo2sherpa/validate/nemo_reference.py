"""NeMo as the reference: its features, its encoder output and its greedy token ids for a given waveform.

Imported only by the stages that need NeMo (graph fidelity, reference transcripts); validate works without it.
The model is restored with NeMo's own restore_from, independently of nemo2sherpa's loader, so a bug in the loader
cannot hide behind a matching reference. NeMo's transcribe() leaves the model in a state where a direct encoder call
no longer matches the export, so everything here calls the modules directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NemoResult:
    features: np.ndarray  # [mels, T] as NeMo's preprocessor computes them
    encoded: np.ndarray  # [D, T'] what the family's graphs must reproduce (encoder output, CTC log-probs)
    encoded_length: int
    tokens: list[int]
    text: str


class NemoReference:
    def __init__(self, checkpoint: Path, threads: int | None = None, manifest=None, family=None) -> None:
        """manifest: the export's; when its attention was changed at conversion (--attention local), NeMo is switched
        to that same attention so that it is the reference for what was exported. family: which exported model
        NeMo is the reference for (families.Family; default: the transducer)."""
        import torch

        from nemo2sherpa.checkpoint.loading import quiet_nemo, vet_checkpoint

        if threads:
            torch.set_num_threads(threads)
        # NeMo's restore_from is the independent reference, but the checkpoint is still untrusted: the same checks as
        # convert, NeMo given the checked config instead of re-reading the archive's, and torch forced to its
        # tensors-only loader for NeMo's own torch.load.
        config = vet_checkpoint(Path(checkpoint))
        self.model = _restore(Path(checkpoint), config)
        self.model.eval()
        if manifest is not None:
            from nemo2sherpa.validate.long_audio import apply_reference_attention

            with quiet_nemo():
                apply_reference_attention(self.model, manifest)
            if manifest.model.streaming is not None:  # the look-ahead it was exported with, offline or streaming
                from nemo2sherpa.families.streaming_step import apply_lookahead

                apply_lookahead(self.model, manifest.model.streaming.lookahead)
        self.sample_rate = int(self.model.cfg.preprocessor.get("sample_rate", 16000))
        if family is None:
            from nemo2sherpa.families import TRANSDUCER as family
        self.family = family
        with quiet_nemo():
            family.prepare_for_export(self.model)  # a hybrid's CTC reference needs its CTC decoding set up

    def run(self, audio: np.ndarray) -> NemoResult:
        """audio: mono float32 at the model's sample rate."""
        import torch

        from nemo2sherpa.checkpoint.loading import quiet_nemo

        model = self.model
        with quiet_nemo(), torch.inference_mode():
            signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
            length = torch.tensor([signal.shape[1]], dtype=torch.int64)
            features, feature_length = model.preprocessor(input_signal=signal, length=length)
            features = features[:, :, : int(feature_length[0])]
            output = self.family.nemo_reference(model, features, feature_length)
        text = model.tokenizer.ids_to_text(output.tokens) if output.tokens else ""
        return NemoResult(
            features=features[0].numpy().copy(),
            encoded=output.output,
            encoded_length=int(output.output.shape[1]),
            tokens=output.tokens,
            text=text,
        )

    @property
    def max_symbols(self) -> int | None:
        greedy = self.model.cfg.decoding.get("greedy", {}) or {}
        value = greedy.get("max_symbols", None)
        return None if value is None else int(value)

    @property
    def blank(self) -> int:
        return int(self.model.decoder.blank_idx)

    def initial_state(self):
        return None

    def decoder_step(self, token: int, state):
        """One prediction-network step from `token` (blank = start), as the exported decoder runs it."""
        import torch

        with torch.inference_mode():
            label = torch.tensor([[token]], dtype=torch.long)
            output, next_state = self.model.decoder.predict(label, state, add_sos=False, batch_size=1)
        return output[0, 0].numpy().copy(), next_state

    def joint(self, frame: np.ndarray, decoder_output: np.ndarray) -> np.ndarray:
        """NeMo's joint output for one encoder frame and one decoder output (log-softmaxed on CPU, as NeMo's joint
        does when its config leaves log_softmax unset)."""
        import torch

        with torch.inference_mode():
            f = torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))[None, None]
            g = torch.from_numpy(np.ascontiguousarray(decoder_output, dtype=np.float32))[None, None]
            return self.model.joint.joint(f, g)[0, 0, 0].numpy().copy()


def _restore(checkpoint: Path, config: dict) -> Any:
    """NeMo's restore_from on the checked config, every failure one line naming the checkpoint: NeMo's own refusal of
    what it cannot build would otherwise end validate in a hundred-line traceback (and NeMo logs that traceback as an
    error before raising, hence CRITICAL)."""
    import logging
    import pickle

    from omegaconf import OmegaConf

    from nemo2sherpa.checkpoint.loading import (
        model_class,
        quiet_nemo,
        torch_reason,
        unbuildable,
        weights_only_everywhere,
    )
    from nemo2sherpa.errors import UserError

    with quiet_nemo(logging.CRITICAL), weights_only_everywhere():
        try:
            # the config's own class, not ASRModel: NeMo falls back to the calling class when the named one fails to
            # build, and would then report the fallback's error (an abstract class) instead of the real one
            return model_class(config).restore_from(str(checkpoint), override_config_path=OmegaConf.create(config),
                                                    map_location="cpu")
        except pickle.UnpicklingError as exc:
            raise UserError.about(checkpoint, "model_weights.ckpt holds more than tensors; refusing to unpickle it "
                                              f"({torch_reason(str(exc))})") from None
        except UserError:
            raise
        except MemoryError:
            raise UserError.about(checkpoint, "NeMo ran out of memory building or loading the model") from None
        except Exception as exc:  # noqa: BLE001 - NeMo's refusal of a config or weights it cannot build or load
            raise UserError.about(checkpoint, unbuildable(exc)) from None
