"""What every family shares: sherpa-onnx's common NeMo metadata, reading it back, graph shapes, onnxruntime sessions
for graph-level decoding, and the PyTorch side of probing an exported encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import Probe

METADATA_VERSION = "1"
#: feature normalisations sherpa-onnx implements for NeMo models ("NA" is read as none)
SHERPA_NORMALIZE_TYPES = ("per_feature", "", "NA")


def common_metadata(facts: ModelFacts, comment: str) -> dict[str, str]:
    """The metadata sherpa-onnx's NeMo loaders share (vocab_size without blank, subsampling, normalisation,
    features), every value a string as ONNX metadata_props hold them."""
    return {
        "vocab_size": str(facts.vocab_size),
        "normalize_type": facts.normalize,
        "subsampling_factor": str(facts.architecture.subsampling_factor),
        "feat_dim": str(facts.architecture.mels),
        "model_type": facts.model_class,
        "version": METADATA_VERSION,
        "model_author": "NeMo",
        "comment": comment,
    }


def int_metadata(metadata: dict[str, str], key: str, result) -> int | None:
    """An integer metadata value, or None (absent, or not an integer: then `result` fails naming it)."""
    if key not in metadata:
        return None
    try:
        return int(metadata[key])
    except ValueError:
        result.fail(f"metadata {key}={metadata[key]!r} is not an integer")
        return None


def sherpa_runtime_contract(metadata: Mapping[str, str], pieces: list[str], encoder_width: int | None,
                            encoder_role: str, result) -> tuple[int | None, str]:
    """sherpa-onnx's reading of a NeMo directory: feat_dim and normalize_type from the encoder's metadata, the
    vocabulary size (without blank) against tokens.txt, whose last token must be the blank."""
    from nemo2sherpa.tokens_txt import BLANK

    feat_dim = int_metadata(dict(metadata), "feat_dim", result)
    normalize = metadata.get("normalize_type", "")
    if normalize not in SHERPA_NORMALIZE_TYPES:
        result.fail(f"metadata normalize_type={normalize!r}; sherpa-onnx implements only per_feature and none")
    scratch = type(result)("scratch")  # the family names a bad vocab_size itself
    vocab_size = int_metadata(dict(metadata), "vocab_size", scratch)
    if pieces and vocab_size is not None:
        if len(pieces) != vocab_size + 1:
            result.fail(f"tokens.txt has {len(pieces)} tokens; vocab_size {vocab_size} + blank needs {vocab_size + 1}")
        elif pieces[-1] != BLANK:
            result.fail(f"tokens.txt's last token is {pieces[-1]!r}, not {BLANK}")
    if feat_dim is not None and encoder_width is not None and encoder_width != feat_dim:
        result.fail(f"feat_dim={feat_dim} in the metadata, but the {encoder_role} takes {encoder_width} features")
    return feat_dim, normalize


def dims(value_info) -> list[Any]:
    """A graph input's or output's shape: ints where fixed, the symbolic name (or None) where dynamic."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def make_session(path: Path, provider: str = "cpu", threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, (tuple, list)):
        return [item for part in value for item in flatten(part)]
    return [value.detach().cpu().numpy()]


def run_export_forward(module: Any, *args: Any) -> Any:
    """Call the module the way its export traced it: forward_for_export when it has one, type checks off."""
    from nemo.core.classes.common import typecheck

    forward = getattr(module, "forward_for_export", None) or module.forward
    with typecheck.disable_checks():
        return forward(*args)


def encoder_probes(module: Any, role: str, frames: Sequence[int], generator: Any, mels: int | None = None
                   ) -> list[Probe]:
    """Random features of each length through the module that holds the encoder (an encoder, or a whole CTC
    model), as its export runs it."""
    import torch

    mels = mels or int(getattr(module, "_feat_in", 0) or module.encoder._feat_in)
    probes = []
    for count in frames:
        features = torch.randn(1, mels, count, generator=generator)
        length = torch.tensor([count], dtype=torch.int64)
        outputs = run_export_forward(module, features, length)
        probes.append(Probe(role, f"{count} frames", flatten((features, length)), flatten(outputs)))
    return probes


def hypothesis_ids(hypotheses: Any) -> list[int]:
    """The first hypothesis's ids from what NeMo's decoding returns (a list of Hypothesis, or (best, all) for some
    models and NeMo versions)."""
    hypothesis = hypotheses[0] if isinstance(hypotheses, list) else hypotheses[0][0]
    sequence = hypothesis.y_sequence
    return [int(t) for t in (sequence.tolist() if hasattr(sequence, "tolist") else sequence)]


def command_line(binary: str, flags: Sequence[str]) -> str:
    """A sherpa-onnx command-line tool's invocation on speech.wav, as the cards show it (CPU, two threads)."""
    return " \\\n".join([binary, *[f"  {flag}" for flag in flags], "  --provider=cpu", "  --num-threads=2",
                           "  speech.wav"])


def offline_usage(constructor: str, arguments: Sequence[tuple[str, str, str]], flags: Sequence[str], *,
                  sample_rate: int, provider_note: str) -> str:
    """The card's Python and command-line blocks for one of sherpa-onnx's offline recognizers: `constructor` (e.g.
    "from_transducer"), its keyword `arguments` as (name, Python literal, comment), and the `sherpa-onnx-offline`
    flags that load the same files. Shared so that every family's card decodes a file the same way."""
    lines = [f"    {name}={value},{f'  # {comment}' if comment else ''}" for name, value, comment in arguments]
    lines += ["    num_threads=2,", f'    provider="cpu",  # {provider_note}']
    command = command_line("sherpa-onnx-offline", flags)
    return f"""### Python (sherpa-onnx)

```python
import sherpa_onnx
import soundfile as sf

recognizer = sherpa_onnx.OfflineRecognizer.{constructor}(
""" + "\n".join(lines) + f"""
)
audio, sample_rate = sf.read("speech.wav", dtype="float32")  # {sample_rate} Hz mono expected
stream = recognizer.create_stream()
stream.accept_waveform(sample_rate, audio)
recognizer.decode_stream(stream)
print(stream.result.text)
```

### Command line (`sherpa-onnx-offline`)

```bash
{command}
```
"""
