"""Train a bundled fixture: a tiny NeMo FastConformer model that really transcribes a few espeak-ng sentences.

    python -m nemo2sherpa.testing.train_fixture --out DIR [--model tdt|ctc|hybrid] [--seed 0]
                                                [--attention rel_pos|rel_pos_local_attn --context L,R]

--model picks the recipe: tiny-tdt-en (a TDT transducer, the default), tiny-ctc-en (a CTC model), tiny-hybrid-en (a
hybrid TDT-CTC model whose two heads are both trained) or tiny-streaming-en (a cache-aware streaming hybrid RNNT-CTC
model: chunked attention trained with each of its look-aheads, causal convolutions).

Why: a model with random weights exercises every graph but proves nothing about text; a real Parakeet checkpoint is
gigabytes. This one is a few hundred kilobytes, trains in about a minute on two CPU cores, and NeMo's own
transcribe() gets every one of its training utterances exactly right, so a converted copy can be held to exact
transcripts. It memorises its data and understands nothing else; that is all a fixture needs.

NeMo's TDT losses only run on CUDA, so training uses nemo2sherpa.testing.tdt_loss (omega = 0: no mixing with the
plain RNN-T loss; sigma from the model's config); an RNNT transducer trains with that module's RNN-T loss (equal to
NeMo's, whose numba kernel is ten times slower here); a CTC head trains with torch's CTC loss, a hybrid with NeMo's
weighting of the two (aux_ctc.ctc_loss_weight). Training stops once NeMo's greedy decoding of a fresh forward pass
gets every utterance right with every head (a streaming model: with every look-ahead it was trained with), runs a
few margin steps, then saves the model and checks it once more with NeMo's transcribe() on the written WAV files,
from the model restored out of the saved .nemo (for a hybrid: with each decoder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nemo2sherpa.facts import Architecture
from nemo2sherpa.validate.synth import Utterance, synthesize, to_pcm16, write_utterances

SENTENCES = (
    "we also need a small plastic snake and a big toy frog",
    "the cat sat on the warm mat",
    "please call stella and ask her to bring these things",
    "she can see the red boat on the lake",
    "my dog likes to run in the park",
)


@dataclass(frozen=True)
class Voice:
    """One espeak-ng rendering: voice (with variant), speed in words per minute, pitch 0-99."""

    tag: str
    voice: str
    speed_wpm: int
    pitch: int


VOICES = (
    Voice("us", "en-us", 165, 50),
    Voice("gb", "en-gb", 150, 40),
    Voice("usf", "en-us+f3", 180, 65),
    Voice("rp", "en-gb-x-rp+m3", 140, 30),
)

LEARNING_RATE = 3e-3
HALVE_EVERY = 200  # a streaming fixture's rate halves this often (one trained with one attention context keeps it)
CHECK_EVERY = 20
MARGIN_STEPS = 40
MAX_STEPS = 1500
NOISE_SNR_DB = (25.0, 45.0)  # white noise added to each training utterance at a random SNR in this range
MAX_SHIFT = 1280  # random leading samples (up to one 80 ms encoder frame), so alignment to the frame grid varies
# a streaming fixture's: up to 250 ms, so that where a stream's chunks start (sherpa-onnx's start 90 ms later on the
# audio than NeMo's) does not decide what it recognises
STREAMING_MAX_SHIFT = 4000


RECIPES = {"tdt": "tiny-tdt-en", "ctc": "tiny-ctc-en", "hybrid": "tiny-hybrid-en", "streaming": "tiny-streaming-en"}


def architecture(attention: str = "rel_pos", context: tuple[int, int] | None = None, kind: str = "tdt"
                 ) -> Architecture:
    """The fixture's shape, as the recipe catalog states it (a scaled-down Parakeet), with the attention asked
    for (context None: the recipe's)."""
    from nemo2sherpa.recipes import get_recipe

    recipe = get_recipe(RECIPES[kind]).architecture
    return dataclasses.replace(recipe, attention=attention,
                               att_context_size=tuple(context or recipe.att_context_size or (-1, -1)))


def normalise(text: str) -> str:
    """Lower case, letters, digits and apostrophes, single spaces: how transcripts are compared."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def synthesise_all(sentences: Sequence[str] = SENTENCES, voices: Sequence[Voice] = VOICES) -> list[Utterance]:
    """Every sentence in every voice, rounded to 16-bit samples: training sees exactly what the WAV files hold."""
    utterances = []
    for i, sentence in enumerate(sentences, start=1):
        for voice in voices:
            audio = synthesize(sentence, voice=voice.voice, speed_wpm=voice.speed_wpm, pitch=voice.pitch)
            utterances.append(Utterance(name=f"s{i}-{voice.tag}", text=sentence, audio=to_pcm16(audio)))
    return utterances


def _hypothesis_text(hypothesis: Any) -> str:
    return hypothesis if isinstance(hypothesis, str) else str(getattr(hypothesis, "text", hypothesis))


def flatten_transcripts(result: Any) -> list[str]:
    """transcribe() returns a list of Hypothesis, or (best, all) for some models and NeMo versions."""
    if isinstance(result, tuple):
        result = result[0]
    return [_hypothesis_text(h) for h in result]


class Trainer:
    """The model, its data as one padded batch, and the loop that trains each head it has: the transducer with the
    CPU TDT loss, a CTC head with torch's CTC loss."""

    def __init__(self, model: Any, utterances: list[Utterance], seed: int) -> None:
        import torch

        self.model = model
        self.utterances = utterances
        self.texts = [normalise(u.text) for u in utterances]
        self.transducer = hasattr(model, "joint")
        self.ctc_head = getattr(model, "ctc_decoder", None) if self.transducer else model.decoder
        if self.transducer:
            self.durations = list(model.cfg.decoding.get("durations") or ())
            self.sigma = float(model.cfg.loss.get("tdt_kwargs", {}).get("sigma", 0.0))
        encoder = model.encoder
        # every look-ahead a streaming encoder was trained with must decode right (offline models: just the one)
        self.contexts = [list(c) for c in getattr(encoder, "att_context_size_all", [encoder.att_context_size])]
        if self.ctc_head is None:
            self.ctc_weight = 0.0  # a transducer alone
        elif self.transducer:
            self.ctc_weight = float(model.cfg.aux_ctc.get("ctc_loss_weight", 0.3))  # a hybrid, weighted as NeMo does
        else:
            self.ctc_weight = 1.0  # a CTC model alone
        lengths = [len(u.audio) for u in utterances]
        self.streaming = model.encoder.att_context_style == "chunked_limited"
        self.max_shift = STREAMING_MAX_SHIFT if self.streaming else MAX_SHIFT
        audio = np.zeros((len(utterances), max(lengths) + self.max_shift), dtype=np.float32)
        for i, u in enumerate(utterances):
            audio[i, : len(u.audio)] = u.audio
        self.audio = torch.from_numpy(audio)
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        ids = [model.tokenizer.text_to_ids(u.text) for u in utterances]
        self.targets = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
        for row, token_ids in enumerate(ids):
            self.targets[row, : len(token_ids)] = torch.tensor(token_ids)
        self.target_lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)

    def augmented(self) -> tuple[Any, Any]:
        """The batch with a random leading shift and a little white noise per utterance (fresh each step)."""
        import torch

        g = self.generator
        batch = self.audio.shape[0]
        shifted = torch.zeros_like(self.audio)
        lengths = self.lengths.clone()
        shifts = torch.randint(0, self.max_shift, (batch,), generator=g)
        snr_db = torch.empty(batch).uniform_(*NOISE_SNR_DB, generator=g)
        for i in range(batch):
            n, s = int(self.lengths[i]), int(shifts[i])
            clean = self.audio[i, :n]
            power = clean.pow(2).mean().clamp(min=1e-8)
            noise = torch.randn(n + s, generator=g) * torch.sqrt(power / 10 ** (snr_db[i] / 10))
            shifted[i, : n + s] = noise
            shifted[i, s: s + n] += clean
            lengths[i] = n + s
        return shifted, lengths

    def set_learning_rate(self, rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def step(self) -> float:
        import torch

        from nemo2sherpa.testing.tdt_loss import rnnt_loss, tdt_loss

        self.model.train()
        audio, lengths = self.augmented()
        encoded, encoded_lengths = self._encoder_output(audio, lengths)
        loss = torch.zeros(())
        if self.transducer:
            decoded, target_lengths, _ = self.model.decoder(targets=self.targets, target_length=self.target_lengths)
            joint = self.model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
            if self.durations:
                transducer_loss = tdt_loss(joint, self.targets, encoded_lengths, target_lengths, self.durations,
                                           sigma=self.sigma)
            else:
                transducer_loss = rnnt_loss(joint, self.targets, encoded_lengths, target_lengths)
            loss = (1 - self.ctc_weight) * transducer_loss
        if self.ctc_head is not None:
            log_probs = self.ctc_head(encoder_output=encoded)  # [B, T, V + 1], blank last
            loss = loss + self.ctc_weight * torch.nn.functional.ctc_loss(
                log_probs.transpose(0, 1), self.targets, encoded_lengths, self.target_lengths,
                blank=log_probs.shape[-1] - 1, zero_infinity=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.item())

    def _encoder_output(self, audio, lengths, start: int | None = None):
        """What every model class's forward() computes first (a transducer's forward() stops there; a CTC model's goes
        on through its head)."""
        import torch

        features, feature_lengths = self.model.preprocessor(input_signal=audio, length=lengths)
        if self.model.training and getattr(self.model, "spec_augmentation", None) is not None:
            features = self.model.spec_augmentation(input_spec=features, length=feature_lengths)
        encoder = self.model.encoder
        if start is None:
            start = int(torch.randint(0, 3, (), generator=self.generator)) if self.model.training and self.streaming \
                else 0
        if start:
            # as a cache-aware step starts a stream: the first pre-encode cache's frames (NeMo's streaming buffer
            # with pad_and_drop_preencoded: zeros, start 1; sherpa-onnx: the stream's first frames, start 2) only
            # feed the subsampling, the frames they subsample to are dropped before the conformer layers. The
            # subsampling grid moves with them: a model trained only on whole utterances recognises such streams
            # worse, and this fixture recognised them not at all
            from nemo2sherpa.families.streaming_step import steady

            prefix = steady(encoder.streaming_cfg.pre_encode_cache_size) if start == 1 else 0
            drop = int(encoder.streaming_cfg.drop_extra_pre_encoded)
            features = torch.cat([features.new_zeros(features.shape[0], features.shape[1], prefix), features], dim=2)
            embedded, lengths = encoder.pre_encode(x=features.transpose(1, 2), lengths=feature_lengths + prefix)
            return encoder(audio_signal=embedded[:, drop:], length=lengths - drop, bypass_pre_encode=True)
        return encoder(audio_signal=features, length=feature_lengths)

    def decode(self) -> dict[str, list[str]]:
        """NeMo's greedy decoding with each head the model has (its own decoding configs), of an eval-mode forward on
        the clean batch; a streaming hybrid's transducer with each look-ahead it was trained with, its CTC head (the
        auxiliary one, weighted 0.3, which stays a token short on one utterance at the shortest look-ahead) with the
        default one."""
        import torch

        self.model.eval()
        out: dict[str, list[str]] = {}
        encoder = self.model.encoder
        default = list(encoder.att_context_size)
        with torch.inference_mode():
            for context in self.contexts:
                encoder.att_context_size = context
                tag = f" {context}" if len(self.contexts) > 1 else ""
                encoded, encoded_lengths = self._encoder_output(self.audio, self.lengths)
                if self.transducer:
                    hypotheses = self.model.decoding.rnnt_decoder_predictions_tensor(
                        encoder_output=encoded, encoded_lengths=encoded_lengths)
                    out[f"transducer{tag}"] = [normalise(text) for text in flatten_transcripts(hypotheses)]
                if self.ctc_head is not None and (context == default or not self.transducer):
                    decoding = self.model.ctc_decoding if self.transducer else self.model.decoding
                    log_probs = self.ctc_head(encoder_output=encoded)
                    hypotheses = decoding.ctc_decoder_predictions_tensor(log_probs, decoder_lengths=encoded_lengths)
                    out[f"ctc{tag}"] = [normalise(text) for text in flatten_transcripts(hypotheses)]
        encoder.att_context_size = default
        if self.streaming and self.transducer:
            out["transducer streamed"] = self._streamed()
            with torch.inference_mode():
                encoded, encoded_lengths = self._encoder_output(self.audio, self.lengths, start=2)
                hypotheses = self.model.decoding.rnnt_decoder_predictions_tensor(
                    encoder_output=encoded, encoded_lengths=encoded_lengths)
            out["transducer, sherpa-onnx's start"] = [normalise(text) for text in flatten_transcripts(hypotheses)]
        return out

    def _streamed(self) -> list[str]:
        """NeMo's own cache-aware streaming of each utterance, chunk by chunk (the reference validate holds a
        streaming export to), with the default look-ahead."""
        import torch

        from nemo2sherpa.families.streaming import STREAMING_TRANSDUCER

        texts = []
        with torch.inference_mode():
            self.model.encoder.setup_streaming_params()
            for row in range(self.audio.shape[0]):
                signal = self.audio[row: row + 1, : int(self.lengths[row])]
                features, length = self.model.preprocessor(input_signal=signal, length=self.lengths[row: row + 1])
                tokens = STREAMING_TRANSDUCER.nemo_reference(self.model, features, length).tokens
                texts.append(normalise(self.model.tokenizer.ids_to_text(tokens)))
        return texts

    def wrong(self, transcripts: dict[str, list[str]]) -> list[tuple[str, int]]:
        return [(head, i) for head, texts in transcripts.items()
                for i, (got, want) in enumerate(zip(texts, self.texts)) if got != want]


def train(model: Any, utterances: list[Utterance], seed: int, log=print) -> int:
    """Train until NeMo decodes every utterance exactly with every head, plus MARGIN_STEPS; the steps taken."""
    trainer = Trainer(model, utterances, seed)
    correct_since: int | None = None
    for step in range(1, MAX_STEPS + 1):
        loss = trainer.step()
        if step % CHECK_EVERY and step != MAX_STEPS:
            continue
        transcripts = trainer.decode()
        wrong = trainer.wrong(transcripts)
        heads = len(transcripts)
        which = ", ".join(sorted({head for head, _ in wrong}))
        log(f"step {step:4d}  loss {loss:8.3f}  wrong {len(wrong):2d} of {len(utterances)} x {heads} decodings"
            + (f" ({which})" if which else ""))
        if len(trainer.contexts) > 1:  # several look-aheads share the weights: settle them with a decaying rate
            trainer.set_learning_rate(LEARNING_RATE * 0.5 ** (step // HALVE_EVERY))
        if wrong:
            correct_since = None
        elif correct_since is None:
            correct_since = step
        if correct_since is not None and step - correct_since >= MARGIN_STEPS:
            return step
    raise RuntimeError(f"the fixture did not learn its {len(utterances)} utterances in {MAX_STEPS} steps")


def add_transcribe_config(model: Any) -> None:
    """A minimal validation_ds section: NeMo's transcribe() reads options from it and fails without one, and the
    config that nemo_model_config() writes (through instantiate()) has no data sections."""
    from omegaconf import open_dict

    with open_dict(model.cfg):
        if model.cfg.get("validation_ds") is None:
            model.cfg.validation_ds = {
                "manifest_filepath": None,
                "sample_rate": int(model.cfg.get("sample_rate", 16000)),
                "batch_size": 4,
                "shuffle": False,
                "use_start_end_token": False,
            }


def transcribe_files(model: Any, paths: Sequence[Path]) -> list[str]:
    """NeMo's own transcribe() on WAV files, the way a user would check a checkpoint."""
    from nemo2sherpa.checkpoint.loading import quiet_nemo

    model.eval()
    with quiet_nemo():
        result = model.transcribe([str(p) for p in paths], batch_size=4, verbose=False)
    return flatten_transcripts(result)


def write_dataset(out: Path, utterances: Sequence[Utterance]) -> list[Path]:
    paths = write_utterances(utterances, out / "audio")
    with open(out / "dataset.jsonl", "w", encoding="utf-8") as stream:
        for utterance, path in zip(utterances, paths):
            line = {"audio": path.relative_to(out).as_posix(), "text": utterance.text}
            stream.write(json.dumps(line) + "\n")
    return paths


def write_readme(out: Path, command: str, arch: Architecture, seed: int, steps: int, seconds: float,
                 utterances: Sequence[Utterance]) -> None:
    voices = "; ".join(f"{v.voice} {v.speed_wpm} wpm pitch {v.pitch}" for v in VOICES)
    attention = arch.attention if arch.attention == "rel_pos" else (
        f"{arch.attention}, att_context_size {list(arch.att_context_size or ())}")
    if arch.is_cache_aware:
        left = (arch.att_context_size or (-1, -1))[0]
        attention = (f"{arch.attention}, cache-aware: {arch.att_context_style} attention, left context {left}, "
                     f"look-aheads {list(arch.lookaheads or ())} (the first the default), {arch.conv_context} "
                     f"convolutions and subsampling, {arch.conv_norm}")
    transducer = f"TDT durations {list(arch.durations)}" if arch.durations else "an RNNT transducer"
    sentences = "\n".join(f"- {s}" for s in SENTENCES)
    total = sum(u.seconds for u in utterances)
    heads = {"EncDecRNNTBPEModel": transducer,
             "EncDecCTCModelBPE": "a CTC head (NeMo's ConvASRDecoder)",
             "EncDecHybridRNNTCTCBPEModel": f"{transducer} and a CTC head, both trained"}[arch.model_class or ""]
    transducer_loss = "nemo2sherpa's CPU TDT loss (sigma from the config, omega 0)" if arch.durations else \
        "nemo2sherpa's CPU RNN-T loss"
    losses = {"EncDecRNNTBPEModel": transducer_loss,
              "EncDecCTCModelBPE": "torch's CTC loss",
              "EncDecHybridRNNTCTCBPEModel": f"{transducer_loss} and torch's CTC loss, weighted as NeMo weights them "
                                             "(aux_ctc.ctc_loss_weight)"}[arch.model_class or ""]
    each_decoder = " with each decoder" if arch.has_ctc_head and arch.pred_hidden else ""
    halving = f", halved every {HALVE_EVERY} steps" if len(arch.lookaheads or ()) > 1 else ""
    shift = (f" (up to {STREAMING_MAX_SHIFT / 16:.0f} ms), and on two steps in three the start a cache-aware step "
             "gives a stream (the first subsampled frames dropped: from zero frames put before the features, as NeMo's "
             "streaming buffer does, or from the first frames, as sherpa-onnx does)") if arch.is_cache_aware else ""
    lookaheads = (" (the transducer with each look-ahead and streamed chunk by chunk with NeMo's cache-aware step, the "
                  "auxiliary CTC head with the default look-ahead)") if arch.is_cache_aware else ""
    (out / "README.md").write_text(f"""# {out.name}: a tiny trained NeMo model

Made by `nemo2sherpa.testing.train_fixture`, for tests (and, the TDT one, as the embedded demo model). It memorised
its {len(utterances)} training utterances ({total:.0f} s of espeak-ng speech) and knows nothing else.

    {command}

- `model.nemo`: {arch.model_class}, FastConformer encoder ({arch.encoder_layers} layers, d_model {arch.d_model},
  {arch.attention_heads} heads, {attention}, dw_striding subsampling x{arch.subsampling_factor}), {heads},
  SentencePiece BPE vocabulary of {arch.vocab_size} tokens (+ blank), {arch.mels} mels.
- `audio/*.wav`: 16 kHz 16-bit mono; `dataset.jsonl`: one `{{"audio": ..., "text": ...}}` per line, audio paths
  relative to that file (written by the script; the bundled copies besides tiny-tdt-en's use its identical audio).

Sentences, each in {len(VOICES)} espeak-ng renderings ({voices}):

{sentences}

Trained from seed {seed} with Adam (lr {LEARNING_RATE}{halving}) on the whole set as one batch, with a little white
noise and a random leading shift per step{shift}, using {losses}: {steps} steps, {seconds:.0f} s on 2 CPU cores.
Training stopped {MARGIN_STEPS} steps after NeMo's greedy decoding first got every utterance right with every
head{lookaheads}; NeMo's `transcribe()` of the restored `model.nemo` then matched every transcript
exactly{each_decoder}.
Rebuilding needs the same espeak-ng, torch and NeMo versions for bit-identical weights.
""", encoding="utf-8")


def parse_context(text: str) -> tuple[int, int]:
    try:
        left, right = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--context wants L,R (two integers), got {text!r}") from None
    return left, right


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo2sherpa.testing.train_fixture", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="fixture directory to (re)create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=tuple(RECIPES), default="tdt",
                        help="tdt: tiny-tdt-en; ctc: tiny-ctc-en; hybrid: tiny-hybrid-en (both heads trained)")
    parser.add_argument("--attention", choices=("rel_pos", "rel_pos_local_attn"), default="rel_pos")
    parser.add_argument("--context", type=parse_context, default=None,
                        help="attention context L,R (frames after subsampling); required for rel_pos_local_attn")
    args = parser.parse_args(argv)
    if args.attention == "rel_pos_local_attn" and args.context is None:
        parser.error("--attention rel_pos_local_attn needs --context L,R")
    context = args.context
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not (out / "model.nemo").is_file():
        parser.error(f"{out} is not empty and holds no model.nemo; refusing to replace it")

    # Before torch loads OpenMP: spinning OpenMP workers make this model's small matrix products several times
    # slower on a shared 2-core machine (the same setting as nemo2sherpa.cli); it does not change any result.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from nemo2sherpa.checkpoint.architecture_config import nemo_model_config
    from nemo2sherpa.checkpoint.loading import instantiate, quiet_nemo
    from nemo2sherpa.checkpoint.local_tokenizer import trained_tokenizer

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)

    started = time.monotonic()
    utterances = synthesise_all()
    print(f"synthesised {len(utterances)} utterances, {sum(u.seconds for u in utterances):.1f} s of audio")
    arch = architecture(args.attention, context, args.model)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = Path(scratch) / "tokenizer"
        trained_tokenizer(SENTENCES, int(arch.vocab_size or 0), tokenizer_dir)
        config = nemo_model_config(arch, str(tokenizer_dir))
        model = instantiate(config)
        parameters = sum(p.numel() for p in model.parameters())
        print(f"model: {parameters} parameters, {args.attention} context {list(arch.att_context_size or ())}")
        train_started = time.monotonic()
        with quiet_nemo():
            steps = train(model, utterances, args.seed)
        train_seconds = time.monotonic() - train_started
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        model.eval()
        add_transcribe_config(model)
        with quiet_nemo():
            model.save_to(str(out / "model.nemo"))
    paths = write_dataset(out, utterances)

    from nemo.collections.asr.models import ASRModel

    with quiet_nemo():
        restored = ASRModel.restore_from(str(out / "model.nemo"), map_location="cpu")
    command = " ".join(["python -m nemo2sherpa.testing.train_fixture", *(argv if argv is not None else sys.argv[1:])])
    write_readme(out, command, arch, args.seed, steps, train_seconds, utterances)
    bad = 0
    for decoder in (("rnnt", "ctc") if hasattr(restored, "ctc_decoder") else (None,)):
        if decoder is not None:
            with quiet_nemo():
                restored.change_decoding_strategy(decoder_type=decoder, verbose=False)
        for utterance, text in zip(utterances, transcribe_files(restored, paths)):
            ok = normalise(text) == normalise(utterance.text)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {decoder or '':4s} {utterance.name:10s} {text}")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"steps {steps}, training {train_seconds:.1f} s, total {time.monotonic() - started:.1f} s, "
          f"fixture {size / 1e6:.2f} MB (model.nemo {(out / 'model.nemo').stat().st_size / 1e6:.2f} MB)")
    if bad:
        print(f"error: NeMo transcribe() of the saved model got {bad} transcript(s) of {len(utterances)} "
              "utterances wrong",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
