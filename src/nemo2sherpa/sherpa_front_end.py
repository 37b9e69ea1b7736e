"""sherpa-onnx's front end for NeMo models, reproduced outside sherpa-onnx, and its differences from NeMo's one by one.

sherpa-onnx computes a NeMo model's features itself with kaldi-native-fbank, the same library this module calls,
with the options its offline NeMo transducer recognizer sets (sherpa-onnx's offline-recognizer-transducer-nemo-impl.h
and features.cc): a povey window, dither 0, per-frame pre-emphasis 0.97, no DC removal, Kaldi framing (snip_edges
false), librosa-style mel filters from 0 Hz to 400 Hz below Nyquist, log(max(energy, FLT_EPSILON)), then
per_feature normalisation with the population variance (sherpa-onnx's math.cc). Its NeMo CTC and online recognizers
set a hann window and filters up to Nyquist instead; each family names the one its recognizer computes
(Family.runtime_front_end). NeMo's preprocessor (in eval mode, so without dither) uses a hann window, whole-signal
pre-emphasis, centred frames, slaney mel filters up to Nyquist, log(energy + 2^-24) and the unbiased variance.

Why reproduce it: the exported graphs can then be fed exactly what sherpa-onnx feeds them, so a transcript that
differs from NeMo's is attributed to the front end (the graphs fed these features give sherpa-onnx's text) or to
the graphs (they do not), and each difference can be switched to NeMo's value alone to measure what it costs.
Nothing here is a hand-written DSP: the frames, windows, FFT and mel filters are kaldi-native-fbank's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)  # kaldi-native-fbank's log floor
NEMO_LOG_GUARD = 2.0 ** -24  # NeMo's log_zero_guard_value
NORMALISATION_EPSILON = 1e-5  # added to the standard deviation, by NeMo and sherpa-onnx alike


@dataclass(frozen=True)
class FrontEnd:
    """The settings in which sherpa-onnx's front end and NeMo's differ; the defaults are sherpa-onnx's."""

    window: str = "povey"  # NeMo: "hann"
    high_freq: float = -400.0  # mel filters' upper edge; <= 0 is relative to Nyquist. NeMo: 0 (Nyquist)
    log_guard: str = "floor"  # log(max(x, FLT_EPSILON)); NeMo: "add", log(x + 2^-24)
    variance: str = "population"  # per_feature normalisation; NeMo: "unbiased"

    def with_nemo(self, factor: str) -> "FrontEnd":
        """This front end with one factor switched to NeMo's value."""
        return dataclasses.replace(self, **{factor: getattr(NEMO_VALUES, factor)})


#: sherpa-onnx's offline NeMo transducer recognizer (offline-recognizer-transducer-nemo-impl.h keeps the defaults)
SHERPA_ONNX = FrontEnd()
#: its offline NeMo CTC recognizer and its online NeMo recognizers set a hann window and mel filters up to Nyquist
#: (offline-recognizer-ctc-impl.h, online-recognizer-*-nemo-impl.h)
SHERPA_ONNX_HANN_NYQUIST = FrontEnd(window="hann", high_freq=0.0)


@dataclass(frozen=True)
class FrontEndOption:
    """A setting sherpa-onnx's users can give that brings its front end closer to NeMo's, where the model's metadata
    cannot: `front_end` is what the runtime then computes, `python` the FeatureExtractorConfig field and value,
    `flag` the command-line tools' option, `does` what it changes, in words for reports."""

    front_end: FrontEnd
    python: str
    flag: str
    does: str


#: the offline NeMo transducer's mel filters end 400 Hz below Nyquist unless high_freq is set (its implementation
#: leaves the user's value alone, and sets the GigaAM one only for GigaAM models): 0 ends them at Nyquist, as NeMo
#: does. from_transducer() has no argument for it; the C API's feature config has no field for it either.
NYQUIST_MEL = FrontEndOption(front_end=FrontEnd(high_freq=0.0), python="high_freq=0", flag="--high-freq=0",
                             does="mel filters up to Nyquist, as NeMo's")
NEMO_VALUES = FrontEnd(window="hann", high_freq=0.0, log_guard="add", variance="unbiased")
#: the switchable differences, as report and docs name them
FACTORS = {
    "window": "povey window (NeMo: hann)",
    "high_freq": "mel filters end 400 Hz below Nyquist (NeMo: at Nyquist)",
    "log_guard": "log(max(x, 1.2e-7)) (NeMo: log(x + 2^-24))",
    "variance": "normalised by the population variance (NeMo: the unbiased one)",
}
#: what cannot be switched inside kaldi-native-fbank's Kaldi-style extractor, and stays as sherpa-onnx has it
FIXED_DIFFERENCES = (
    "Kaldi framing (frames centred 80 samples later than NeMo's, no zero-padded centre frames)",
    "pre-emphasis applied per frame (NeMo: over the whole signal)",
)


def features(audio: np.ndarray, feat_dim: int, front_end: FrontEnd = SHERPA_ONNX, normalize: bool = True,
             sample_rate: int = 16000) -> np.ndarray:
    """Log-mel features [feat_dim, T] (NeMo's layout) of float samples in [-1, 1], as `front_end` computes them."""
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    options.frame_opts.samp_freq = sample_rate
    options.frame_opts.dither = 0.0
    options.frame_opts.snip_edges = False
    options.frame_opts.remove_dc_offset = False
    options.frame_opts.preemph_coeff = 0.97
    options.frame_opts.window_type = front_end.window
    options.mel_opts.num_bins = feat_dim
    options.mel_opts.low_freq = 0.0
    options.mel_opts.high_freq = front_end.high_freq
    options.mel_opts.is_librosa = True
    options.use_log_fbank = False  # energies: the log and its guard are applied below
    extractor = knf.OnlineFbank(options)
    extractor.accept_waveform(sample_rate, np.asarray(audio, dtype=np.float32))
    extractor.input_finished()
    energies = np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)]).astype(np.float64)
    if front_end.log_guard == "floor":
        log_mel = np.log(np.maximum(energies, FLT_EPSILON))
    else:
        log_mel = np.log(energies + NEMO_LOG_GUARD)
    if normalize:
        log_mel = per_feature(log_mel, unbiased=front_end.variance == "unbiased")
    return log_mel.T.astype(np.float32)


def per_feature(log_mel: np.ndarray, unbiased: bool) -> np.ndarray:
    """[T, F] normalised per mel bin over time: (x - mean) / (std + 1e-5)."""
    mean = log_mel.mean(axis=0, keepdims=True)
    std = log_mel.std(axis=0, ddof=1 if unbiased and log_mel.shape[0] > 1 else 0, keepdims=True)
    return (log_mel - mean) / (std + NORMALISATION_EPSILON)
