"""Read a checkpoint's model_config.yaml into model facts, refusing what sherpa-onnx cannot run.

Everything here works on the config alone: a checkpoint is refused in a fraction of a second, before its weights are
read or NeMo is imported. The config is untrusted: config_reading bounds it while it is read, config_targets checks
every class it names, and model_size checks that the model it describes fits its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from nemo2sherpa.checkpoint.config_targets import check_targets
from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import CACHE_AWARE_STYLE, SUPPORTED_CLASSES, Architecture, ModelFacts

SUPPORTED = ("TDT/RNNT BPE transducers (EncDecRNNTBPEModel), BPE CTC models (EncDecCTCModelBPE) and hybrid "
             "TDT/RNNT-CTC models (EncDecHybridRNNTCTCBPEModel)")
_TRANSDUCERS = ("EncDecRNNTBPEModel", "EncDecHybridRNNTCTCBPEModel")
_KNOWN_OTHERS = {
    "EncDecCTCModel": "a character-level CTC model",
    "EncDecMultiTaskModel": "an attention encoder-decoder (AED, e.g. Canary) model",
    "EncDecRNNTModel": "a character-level transducer",
    "EncDecHybridRNNTCTCModel": "a character-level hybrid model",
    "EncDecTransfModelBPE": "an attention encoder-decoder model",
}
SHERPA_NORMALIZATIONS = {"per_feature": "per_feature", "NA": "", "": ""}
PREPROCESSOR_DEFAULTS: dict[str, Any] = {
    "window_size": 0.02,
    "window_stride": 0.01,
    "window": "hann",
    "n_fft": None,
    "preemph": 0.97,
    "dither": 1e-5,
    "log": True,
    "log_zero_guard_type": "add",
    "log_zero_guard_value": 2**-24,
    "mag_power": 2.0,
    "mel_norm": "slaney",
    "lowfreq": 0,
    "highfreq": None,
    "pad_to": 16,
    "frame_splicing": 1,
}


def model_class_of(config: Mapping[str, Any], source: Path) -> str:
    target = config.get("target")
    if not isinstance(target, str) or not target:
        raise UserError.about(source, "model_config.yaml names no model class ('target'); cannot tell what it is")
    return target.rsplit(".", 1)[-1]


def _section(config: Mapping[str, Any], name: str, source: Path) -> Mapping[str, Any]:
    section = config.get(name)
    if not isinstance(section, Mapping):
        raise UserError.about(source, f"model_config.yaml has no '{name}' section")
    return section


def _target_name(section: Mapping[str, Any]) -> str:
    return str(section.get("_target_", "")).rsplit(".", 1)[-1]



def facts_from_config(config: Mapping[str, Any], source: Path, tokenizer_vocab: int | None = None) -> ModelFacts:
    """Model facts, or a one-line refusal naming the class or setting that sherpa-onnx cannot run."""
    try:
        return _facts_from_config(config, source, tokenizer_vocab)
    except UserError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        # a config from the internet may lack or mistype any setting: that is the file's fault, said in one line
        raise UserError.about(source, f"model_config.yaml has a missing or malformed setting "
                                      f"({type(exc).__name__}: {exc})") from None


def _facts_from_config(config: Mapping[str, Any], source: Path, tokenizer_vocab: int | None) -> ModelFacts:
    check_targets(config, source)
    model_class = model_class_of(config, source)
    if model_class not in SUPPORTED_CLASSES:
        what = _KNOWN_OTHERS.get(model_class, "not a supported model class")
        raise UserError.about(source, f"{model_class} is {what}; nemo2sherpa converts {SUPPORTED}")

    tokenizer = config.get("tokenizer") or {}
    if tokenizer.get("type", "bpe") != "bpe":
        raise UserError.about(source, f"{model_class} uses a {tokenizer.get('type')!r} tokenizer; "
                                      "only SentencePiece ('bpe') tokenizers are supported")

    pre = _section(config, "preprocessor", source)
    if _target_name(pre) != "AudioToMelSpectrogramPreprocessor":
        raise UserError.about(source, f"preprocessor {_target_name(pre) or '?'} is not supported; sherpa-onnx computes "
                                      "log-mel features (AudioToMelSpectrogramPreprocessor)")
    if int(pre.get("frame_splicing", 1) or 1) != 1:
        raise UserError.about(source, "preprocessor.frame_splicing is not 1; sherpa-onnx does not splice frames")
    normalize = str(pre.get("normalize", "per_feature") or "")
    if normalize not in SHERPA_NORMALIZATIONS:
        raise UserError.about(source, f"preprocessor.normalize is {normalize!r}; sherpa-onnx implements only "
                                      "'per_feature' and none")

    enc = _section(config, "encoder", source)
    if _target_name(enc) != "ConformerEncoder":
        raise UserError.about(source, f"encoder {_target_name(enc) or '?'} is not supported; "
                                      "nemo2sherpa exports (Fast)Conformer encoders")
    streaming = _streaming_facts(enc, source)
    context = enc.get("att_context_size") or [-1, -1]
    if context and isinstance(context[0], (list, tuple)):  # multi-lookahead models list several; the first is default
        context = context[0]
    attention = str(enc.get("self_attention_model", "rel_pos"))

    transducer = _transducer_facts(config, source) if model_class in _TRANSDUCERS else {}
    ctc = _ctc_vocab(config, model_class, source)  # None: no CTC head; -1: one whose size NeMo sets at load
    vocab_size = transducer.get("vocab_size") or (ctc if ctc and ctc > 0 else None)
    if vocab_size is None and tokenizer_vocab is not None:
        vocab_size = tokenizer_vocab
    if vocab_size is None:
        raise UserError.about(source, "the config states no vocabulary size (decoder.vocab_size)")
    if ctc is not None and ctc > 0 and vocab_size != ctc:
        raise UserError.about(source, f"the CTC head has {ctc} tokens but the transducer {vocab_size}")
    if tokenizer_vocab is not None and tokenizer_vocab != vocab_size:
        raise UserError.about(source, f"the tokenizer has {tokenizer_vocab} tokens but the model expects {vocab_size}")

    mels = int(pre.get("features", enc.get("feat_in", 64)))
    if int(enc.get("feat_in", mels)) != mels:
        raise UserError.about(source, f"encoder.feat_in {enc.get('feat_in')} differs from preprocessor.features {mels}")
    d_model = int(enc["d_model"])
    conv_channels = int(enc.get("subsampling_conv_channels", -1))
    architecture = Architecture(
        model_class=model_class,
        encoder_layers=int(enc["n_layers"]),
        d_model=d_model,
        attention_heads=int(enc.get("n_heads", 4)),
        ff_expansion_factor=int(enc.get("ff_expansion_factor", 4)),
        conv_kernel_size=int(enc.get("conv_kernel_size", 31)),
        subsampling_factor=int(enc.get("subsampling_factor", 4)),
        subsampling_conv_channels=d_model if conv_channels == -1 else conv_channels,
        attention=attention,
        att_context_size=(int(context[0]), int(context[1])),
        xscaling=bool(enc.get("xscaling", True)),
        use_bias=bool(enc.get("use_bias", True)),
        pos_emb_max_len=int(enc.get("pos_emb_max_len", 5000)),
        mels=mels,
        vocab_size=vocab_size,
        durations=transducer.get("durations"),
        pred_hidden=transducer.get("pred_hidden"),
        pred_rnn_layers=transducer.get("pred_rnn_layers"),
        joint_hidden=transducer.get("joint_hidden"),
        **streaming,
    )
    frontend = {key: pre.get(key, default) for key, default in PREPROCESSOR_DEFAULTS.items()}
    return ModelFacts(
        architecture=architecture,
        decoder_kind=transducer.get("decoder_kind", "ctc"),
        normalize=SHERPA_NORMALIZATIONS[normalize],
        sample_rate=int(pre.get("sample_rate", config.get("sample_rate", 16000))),
        max_symbols_per_frame=transducer.get("max_symbols"),
        frontend=frontend,
    )


def _streaming_facts(enc: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """A cache-aware encoder's streaming shape (empty for an offline one), or a one-line refusal of an attention
    style that NeMo cannot export with caches."""
    style = str(enc.get("att_context_style", "regular") or "regular")
    if style == "regular":
        return {}
    if style != CACHE_AWARE_STYLE:
        raise UserError.about(source, f"encoder.att_context_style is {style!r}; nemo2sherpa converts offline "
                                      f"('regular') and cache-aware streaming ('{CACHE_AWARE_STYLE}') encoders")
    contexts = enc.get("att_context_size") or []
    if not contexts:
        raise UserError.about(source, f"a {CACHE_AWARE_STYLE} encoder without att_context_size")
    if not isinstance(contexts[0], (list, tuple)):
        contexts = [contexts]
    lookaheads = tuple(int(context[1]) for context in contexts)
    if min(lookaheads) < 0:
        raise UserError.about(source, f"att_context_size {[list(c) for c in contexts]} has an unlimited look-ahead; "
                                      "a streaming encoder needs a finite one")
    kernel = int(enc.get("conv_kernel_size", 31))
    conv = enc.get("conv_context_size")
    causal = conv == "causal" or (isinstance(conv, (list, tuple)) and [int(v) for v in conv] == [kernel - 1, 0])
    return {"att_context_style": style, "lookaheads": lookaheads, "conv_context": "causal" if causal else "symmetric",
            "causal_downsampling": bool(enc.get("causal_downsampling", False)),
            "conv_norm": str(enc.get("conv_norm_type", "batch_norm"))}


def _transducer_facts(config: Mapping[str, Any], source: Path) -> dict[str, Any]:
    """The prediction network, joint and TDT durations, refusing what sherpa-onnx's transducer cannot decode."""
    dec = _section(config, "decoder", source)
    if _target_name(dec) != "RNNTDecoder":
        raise UserError.about(source, f"decoder {_target_name(dec) or '?'} is not supported; sherpa-onnx runs an "
                                      "LSTM prediction network (RNNTDecoder)")
    prednet = dec.get("prednet") or {}
    joint = _section(config, "joint", source)
    jointnet = joint.get("jointnet") or {}
    decoding = config.get("decoding") or {}
    extra_outputs = int(joint.get("num_extra_outputs", 0) or 0)
    if str(decoding.get("model_type", "rnnt")) == "tdt":
        durations = tuple(int(d) for d in decoding.get("durations") or ())
        if not durations:
            raise UserError.about(source, "a TDT model whose decoding config lists no durations")
        if durations != tuple(range(len(durations))):
            raise UserError.about(source, f"TDT durations {list(durations)} are not 0..{len(durations) - 1}; "
                                          "sherpa-onnx uses the argmax index as the frame skip")
        if extra_outputs != len(durations):
            raise UserError.about(source, f"joint has {extra_outputs} extra outputs but the model lists "
                                          f"{len(durations)} durations")
        decoder_kind = "tdt"
    else:
        if extra_outputs:
            raise UserError.about(source, f"an RNNT joint with {extra_outputs} extra outputs (multi-blank RNNT) "
                                          "is not supported by sherpa-onnx")
        durations = ()
        decoder_kind = "rnnt"
    vocab_size = dec.get("vocab_size", joint.get("num_classes"))
    greedy = decoding.get("greedy") or {}
    max_symbols = greedy.get("max_symbols", decoding.get("max_symbols"))
    return {
        "decoder_kind": decoder_kind,
        "durations": durations,
        "vocab_size": None if vocab_size is None else int(vocab_size),
        "pred_hidden": int(prednet["pred_hidden"]),
        "pred_rnn_layers": int(prednet.get("pred_rnn_layers", 1)),
        "joint_hidden": int(jointnet.get("joint_hidden", 0)),
        "max_symbols": None if max_symbols is None else int(max_symbols),
    }


def _ctc_vocab(config: Mapping[str, Any], model_class: str, source: Path) -> int | None:
    """The CTC head's vocabulary without blank (CTC models' decoder, hybrids' aux_ctc.decoder): None without a CTC
    head, -1 for a head whose size NeMo takes from the tokenizer when it builds the model."""
    if model_class == "EncDecCTCModelBPE":
        head = _section(config, "decoder", source)
    elif model_class == "EncDecHybridRNNTCTCBPEModel":
        head = (config.get("aux_ctc") or {}).get("decoder")
        if not isinstance(head, Mapping):
            return None
    else:  # a transducer's config may keep an aux_ctc section from training; NeMo builds no head from it
        return None
    if _target_name(head) != "ConvASRDecoder":
        raise UserError.about(source, f"CTC decoder {_target_name(head) or '?'} is not supported; sherpa-onnx runs "
                                      "NeMo's ConvASRDecoder head")
    classes = int(head.get("num_classes", -1) or -1)
    vocabulary = head.get("vocabulary") or []
    if classes > 0:
        return classes
    return len(vocabulary) if vocabulary else -1
