"""Write the NeMo model config for an architecture: what --random-weights builds, and what tests and the trained
fixture start from. Plain dicts, no NeMo import.
"""

from __future__ import annotations

from typing import Any

from nemo2sherpa.facts import Architecture

_CLASS_TARGETS = {
    "EncDecRNNTBPEModel": "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel",
    "EncDecHybridRNNTCTCBPEModel": "nemo.collections.asr.models.hybrid_rnnt_ctc_bpe_models.EncDecHybridRNNTCTCBPEModel",
    "EncDecCTCModelBPE": "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE",
}
_TRANSDUCER_FIELDS = ("pred_hidden", "pred_rnn_layers", "joint_hidden", "durations")


def nemo_model_config(arch: Architecture, tokenizer_dir: str, dropout: float = 0.0) -> dict[str, Any]:
    """A complete FastConformer config for the architecture's class: a TDT (durations listed) or RNNT transducer,
    a CTC model, or a hybrid of both."""
    assert arch.model_class in _CLASS_TARGETS, arch.model_class
    transducer = arch.model_class != "EncDecCTCModelBPE"
    ignored = () if transducer else _TRANSDUCER_FIELDS
    missing = [name for name in arch.missing() if name not in ignored]
    if missing:
        raise ValueError(f"architecture is incomplete, missing: {', '.join(missing)}")
    config: dict[str, Any] = {
        "target": _CLASS_TARGETS[arch.model_class],
        "sample_rate": 16000,
        "tokenizer": {"dir": tokenizer_dir, "type": "bpe"},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": arch.mels,
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1e-5,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": arch.mels,
            "feat_out": -1,
            "n_layers": arch.encoder_layers,
            "d_model": arch.d_model,
            "subsampling": "dw_striding",
            "subsampling_factor": arch.subsampling_factor,
            "subsampling_conv_channels": arch.subsampling_conv_channels,
            "causal_downsampling": False,
            "ff_expansion_factor": arch.ff_expansion_factor,
            "self_attention_model": arch.attention,
            "n_heads": arch.attention_heads,
            "att_context_size": list(arch.att_context_size or (-1, -1)),
            "att_context_style": "regular",
            "xscaling": arch.xscaling,
            "untie_biases": True,
            "pos_emb_max_len": arch.pos_emb_max_len,
            "conv_kernel_size": arch.conv_kernel_size,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "use_bias": arch.use_bias,
            "dropout": dropout,
            "dropout_pre_encoder": dropout,
            "dropout_emb": 0.0,
            "dropout_att": dropout,
        },
    }
    if arch.is_cache_aware:
        _make_cache_aware(config, arch)
    if transducer:
        config.update(_transducer_sections(arch, dropout))
    else:
        config["decoder"] = _ctc_head(arch)
        config["decoding"] = {"strategy": "greedy"}
    if arch.model_class == "EncDecHybridRNNTCTCBPEModel":
        config["aux_ctc"] = {
            "ctc_loss_weight": 0.3,
            "use_cer": False,
            "ctc_reduction": "mean_batch",
            "decoder": _ctc_head(arch),
            "decoding": {"strategy": "greedy"},
        }
    return config


def _make_cache_aware(config: dict[str, Any], arch: Architecture) -> None:
    """A cache-aware streaming encoder as NeMo's streaming FastConformer configs have it: chunked attention with
    each look-ahead (the default first), causal convolutions and subsampling, and no per-utterance feature
    normalisation (a stream has no whole utterance to normalise over)."""
    left = int((arch.att_context_size or (-1, -1))[0])
    encoder = config["encoder"]
    encoder.update({
        "att_context_style": arch.att_context_style,
        "att_context_size": [[left, int(right)] for right in arch.lookaheads or ()],
        "conv_context_size": "causal" if arch.conv_context == "causal" else None,
        "causal_downsampling": bool(arch.causal_downsampling),
        "conv_norm_type": arch.conv_norm or "batch_norm",
    })
    config["preprocessor"]["normalize"] = "NA"


def _ctc_head(arch: Architecture) -> dict[str, Any]:
    """NeMo fills the vocabulary from the tokenizer when it builds the model."""
    return {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": arch.d_model, "num_classes": -1,
            "vocabulary": []}


def _transducer_sections(arch: Architecture, dropout: float) -> dict[str, Any]:
    durations = list(arch.durations or ())
    tdt = bool(durations)
    return {
        # The model classes read these while wiring the joint to the encoder and the prediction network.
        "model_defaults": {
            "enc_hidden": arch.d_model,
            "pred_hidden": arch.pred_hidden,
            "joint_hidden": arch.joint_hidden,
            **({"tdt_durations": durations, "num_tdt_durations": len(durations)} if tdt else {}),
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "vocab_size": arch.vocab_size,  # NeMo sets it from the tokenizer too; stated here for readers
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {
                "pred_hidden": arch.pred_hidden,
                "pred_rnn_layers": arch.pred_rnn_layers,
                "t_max": None,
                "dropout": dropout,
            },
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "num_classes": arch.vocab_size,
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": False,
            "jointnet": {"joint_hidden": arch.joint_hidden, "activation": "relu", "dropout": dropout},
            "num_extra_outputs": len(durations),
        },
        "decoding": {
            "strategy": "greedy_batch",
            "model_type": "tdt" if tdt else "rnnt",
            "greedy": {"max_symbols": 10},
            **({"durations": durations} if tdt else {}),
        },
        "loss": (
            {"loss_name": "tdt", "tdt_kwargs": {"durations": durations, "sigma": 0.02, "omega": 0.1}}
            if tdt
            else {"loss_name": "default"}
        ),
    }
