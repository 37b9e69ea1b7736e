"""Train small-tdt-en: a small FastConformer TDT model that recognises English sentences it has never heard.

    python -m nemo2sherpa.testing.train_small --out DIR [--corpus CORPUS] [--epochs 6] [--restart-epochs 2,8,8,4]
                                              [--seed 0]

The corpus is nemo2sherpa.testing.corpus's (espeak-ng speech of sentences drawn from the 1,951 most frequent
alphabetic English words); it is built into CORPUS first if CORPUS holds none. The model is the recipe catalog's
`small-tdt-en` architecture; its SentencePiece vocabulary is trained on the training sentences' text.

Why a second trained model: the tiny fixtures memorise five sentences, which proves the plumbing but not accuracy.
A WER measured on held-out sentences (new word sequences, never in training) is what says whether an export, a
front end or a precision variant costs recognition, so this model is what the accuracy figures are measured on.

Training runs on CPU: length-bucketed batches of about BATCH_SECONDS of audio, AdamW with a warm-up, a cosine
decay and warm restarts, light SpecAugment, and nemo2sherpa's CPU TDT loss (NeMo's needs CUDA). After every
epoch the held-out WER of NeMo's greedy decoding is logged and the training state is saved, so an interrupted run
resumes where it stopped (run the same command again). The schedule depends on the epoch counts only, so the same
seed and epochs give the same model on the same software; the wall time does not enter it. The written DIR holds
model.nemo, heldout.jsonl with its audio (the held-out set the WER figures use), training_sentences.txt (what it
heard, so that anyone can check that no held-out sentence is among them) and README.md, the model card.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

RECIPE = "small-tdt-en"
BATCH_SECONDS = 120.0  # padded audio per batch: big enough for stable steps, small enough for 2 cores' memory
PEAK_LEARNING_RATE = 2e-3
WARMUP_STEPS = 300
WEIGHT_DECAY = 1e-3
RESTART_PEAK = 0.3  # the second cycle's peak, as a share of PEAK_LEARNING_RATE
SPEC_AUGMENT = {"freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 0.05}


@dataclass(frozen=True)
class Clip:
    """One corpus utterance, held as the 16-bit samples its WAV file has."""

    name: str
    text: str
    samples: np.ndarray  # int16

    @property
    def seconds(self) -> float:
        return self.samples.size / 16000


def read_split(corpus: Path, split: str) -> list[Clip]:
    clips = []
    for line in (corpus / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        with wave.open(str(corpus / entry["audio"]), "rb") as stream:
            samples = np.frombuffer(stream.readframes(stream.getnframes()), dtype=np.int16)
        clips.append(Clip(Path(entry["audio"]).stem, entry["text"], samples))
    return clips


def length_batches(clips: Sequence[Clip], rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length (little padding), each batch holding about BATCH_SECONDS of padded audio,
    in a fresh random order per epoch. The sort is jittered so that batches differ between epochs."""
    order = sorted(range(len(clips)), key=lambda i: clips[i].seconds * rng.uniform(0.9, 1.1))
    batches, current, longest = [], [], 0.0
    for index in order:
        longest_if_added = max(longest, clips[index].seconds)
        if current and longest_if_added * (len(current) + 1) > BATCH_SECONDS:
            batches.append(current)
            current, longest_if_added = [], clips[index].seconds
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def padded(clips: Sequence[Clip]) -> tuple[Any, Any]:
    import torch

    lengths = [c.samples.size for c in clips]
    audio = np.zeros((len(clips), max(lengths)), dtype=np.float32)
    for row, clip in enumerate(clips):
        audio[row, : clip.samples.size] = clip.samples / 32768.0
    return torch.from_numpy(audio), torch.tensor(lengths, dtype=torch.long)


def learning_rate(step: int, cycle_ends: Sequence[int]) -> float:
    """Linear warm-up, a cosine decay to 2% of the peak over the first cycle, then shorter cosine cycles from
    RESTART_PEAK of the peak to 2%, each ending at its step in cycle_ends (warm restarts: a run is extended by adding
    a cycle, which leaves every earlier step's rate as it was, so an extended, resumed run equals a fresh one)."""
    if step < WARMUP_STEPS:
        return PEAK_LEARNING_RATE * (step + 1) / WARMUP_STEPS
    if step < cycle_ends[0]:
        progress = (step - WARMUP_STEPS) / max(1, cycle_ends[0] - WARMUP_STEPS)
        return PEAK_LEARNING_RATE * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
    start, end = cycle_ends[0], cycle_ends[0]
    for end in cycle_ends[1:]:
        if step < end:
            break
        start = end
    progress = min(1.0, (step - start) / max(1, end - start)) if step < end else 1.0  # past the last: its floor
    return PEAK_LEARNING_RATE * (0.02 + (RESTART_PEAK - 0.02) * 0.5 * (1 + math.cos(math.pi * progress)))


class SmallTrainer:
    """The model, its optimiser and one TDT training step on a batch of clips."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        self.durations = list(model.cfg.decoding.durations)
        self.sigma = float(model.cfg.loss.get("tdt_kwargs", {}).get("sigma", 0.0))
        decay = [p for n, p in model.named_parameters() if p.dim() > 1]
        no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=PEAK_LEARNING_RATE)

    def step(self, clips: Sequence[Clip], lr: float) -> float:
        import torch

        from nemo2sherpa.testing.tdt_loss import tdt_loss

        model = self.model
        model.train()
        audio, lengths = padded(clips)
        ids = [model.tokenizer.text_to_ids(c.text) for c in clips]
        targets = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
        for row, token_ids in enumerate(ids):
            targets[row, : len(token_ids)] = torch.tensor(token_ids)
        target_lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        features, feature_lengths = model.preprocessor(input_signal=audio, length=lengths)
        features = model.spec_augmentation(input_spec=features, length=feature_lengths)
        encoded, encoded_lengths = model.encoder(audio_signal=features, length=feature_lengths)
        decoded, _, _ = model.decoder(targets=targets, target_length=target_lengths)
        joint = model.joint(encoder_outputs=encoded, decoder_outputs=decoded)
        loss = tdt_loss(joint, targets, encoded_lengths, target_lengths, self.durations, sigma=self.sigma,
                        reduction="mean")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.item())


def greedy_transcripts(model: Any, clips: Sequence[Clip], batch: int = 32) -> list[str]:
    """NeMo's own greedy TDT decoding of an eval-mode forward pass, in batches."""
    import torch

    from nemo2sherpa.testing.train_fixture import flatten_transcripts, normalise

    model.eval()
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(clips), batch):
            audio, lengths = padded(clips[start:start + batch])
            features, feature_lengths = model.preprocessor(input_signal=audio, length=lengths)
            encoded, encoded_lengths = model.encoder(audio_signal=features, length=feature_lengths)
            hypotheses = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=encoded,
                                                                        encoded_lengths=encoded_lengths)
            out.extend(normalise(text) for text in flatten_transcripts(hypotheses))
    return out


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    import jiwer

    return float(jiwer.wer(list(references), list(hypotheses)))


def build_model(corpus_texts: Sequence[str], scratch: Path) -> Any:
    from nemo2sherpa.checkpoint.architecture_config import nemo_model_config
    from nemo2sherpa.checkpoint.loading import instantiate
    from nemo2sherpa.checkpoint.local_tokenizer import trained_tokenizer
    from nemo2sherpa.recipes import get_recipe

    arch = get_recipe(RECIPE).architecture
    tokenizer_dir = scratch / "tokenizer"
    trained_tokenizer(corpus_texts, int(arch.vocab_size or 0), tokenizer_dir)
    config = nemo_model_config(arch, str(tokenizer_dir), dropout=0.1)
    config["spec_augment"] = {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation", **SPEC_AUGMENT}
    return instantiate(config)


def train(model: Any, training: Sequence[Clip], heldout: Sequence[Clip], epochs: int, restart_epochs: Sequence[int],
          seed: int, state_path: Path, log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """Train for `epochs` epochs of the first learning-rate cycle and then each warm-restarted cycle's epochs of
    restart_epochs (resuming from state_path if it holds an earlier run's state); the per-epoch history of loss,
    held-out WER and seconds."""
    import torch

    trainer = SmallTrainer(model)
    rng = random.Random(seed)
    # the batches of every epoch, fixed up front: a resumed run replays the same ones
    cycle_epochs = list(itertools.accumulate([epochs, *restart_epochs]))
    epochs = cycle_epochs[-1]
    plans = [length_batches(training, rng) for _ in range(epochs)]
    cycle_ends = [sum(len(p) for p in plans[:last]) for last in cycle_epochs]
    history: list[dict[str, float]] = []
    first_epoch, step = 0, 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        first_epoch, step, history = int(state["epoch"]), int(state["step"]), json.loads(state["history"])
        log(f"resuming after epoch {first_epoch}, step {step}")
    references = [c.text for c in heldout]
    for epoch in range(first_epoch, epochs):
        started, losses = time.monotonic(), []
        for number, batch in enumerate(plans[epoch], start=1):
            rate = learning_rate(step, cycle_ends)
            losses.append(trainer.step([training[i] for i in batch], rate))
            step += 1
            if number % 25 == 0:
                log(f"epoch {epoch + 1} step {number}/{len(plans[epoch])}  loss {np.mean(losses[-25:]):.3f}  "
                    f"{time.monotonic() - started:.0f} s")
        wer = corpus_wer(references, greedy_transcripts(model, heldout))
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "heldout_wer": wer,
                        "seconds": time.monotonic() - started})
        log(f"epoch {epoch + 1} of {epochs}: loss {np.mean(losses):.3f}, held-out WER {100 * wer:.2f}%, "
            f"{time.monotonic() - started:.0f} s")
        temporary = state_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "step": step,
                    "history": json.dumps(history)}, temporary)
        os.replace(temporary, state_path)
    return history


def write_heldout(out: Path, heldout: Sequence[Clip]) -> None:
    """The held-out clips as 16-bit FLAC (lossless, 30% smaller than WAV: the bundle stays within 25 MB)."""
    import soundfile

    (out / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for clip in heldout:
        soundfile.write(out / "audio" / f"{clip.name}.flac", clip.samples, 16000, subtype="PCM_16")
        lines.append(json.dumps({"audio": f"audio/{clip.name}.flac", "text": clip.text}))
    (out / "heldout.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_card(out: Path, command: str, model: Any, training: Sequence[Clip], heldout: Sequence[Clip],
               history: Sequence[dict[str, float]], final_wer: float, bundled_wer: float, bundled: int,
               seed: int) -> None:
    from nemo2sherpa.recipes import get_recipe
    from nemo2sherpa.testing import corpus

    arch = get_recipe(RECIPE).architecture
    parameters = sum(p.numel() for p in model.parameters())
    hours = sum(c.seconds for c in training) / 3600
    rows = "\n".join(f"| {h['epoch']:.0f} | {h['loss']:.3f} | {100 * h['heldout_wer']:.2f}% | {h['seconds']:.0f} |"
                     for h in history)
    voices = ", ".join(corpus.VOICES)
    (out / "README.md").write_text(f"""# small-tdt-en: a small English TDT model trained on synthetic speech

Made by `nemo2sherpa.testing.train_small` so that nemo2sherpa's accuracy figures mean something: it recognises
sentences it has never heard. Rebuild it with

    {command}

## What it is
- `model.nemo`: {arch.model_class}, a FastConformer encoder ({arch.encoder_layers} layers, d_model
  {arch.d_model}, {arch.attention_heads} heads, dw_striding subsampling x{arch.subsampling_factor}) with a TDT
  decoder (durations {list(arch.durations or ())}), {parameters:,} parameters, a SentencePiece BPE vocabulary of
  {arch.vocab_size} tokens (+ blank) trained on the training text, {arch.mels} mels.
- Trained from seed {seed} on {len(training):,} utterances ({hours:.1f} h) of espeak-ng speech: sentences of 3 to 12
  words drawn uniformly from the {len(corpus.vocabulary()):,} purely alphabetic words among the 2,000 most frequent
  English words of `wordfreq`, in the voices {voices} with the variants
  {", ".join(v for v in corpus.VARIANTS if v)}, speeds {", ".join(str(s) for s in corpus.SPEEDS_WPM)} words per
  minute, several pitches and white noise at 25-45 dB SNR. CPU only, nemo2sherpa's CPU TDT loss (NeMo's needs
  CUDA), AdamW, light SpecAugment; `--corpus corpus` builds the corpus there first.
- The held-out set: {len(heldout)} utterances of sentences that are not in the training set
  (`training_sentences.txt` lists those), from the same words, spoken the same way. NeMo's greedy WER on them:
  **{100 * final_wer:.2f}%**. The first {bundled} are bundled (`heldout.jsonl`, `audio/*.flac`; validate's default
  audio for this recipe); NeMo's WER on those: {100 * bundled_wer:.2f}%. The whole set is rebuilt by
  `python -m nemo2sherpa.testing.corpus --out CORPUS --train {len(training)} --heldout {len(heldout)}`.

| epoch | mean loss | held-out WER (NeMo greedy) | wall seconds (pauses included) |
|---|---|---|---|
{rows}

## What it is not
- Not a general English recogniser: it knows only those {len(corpus.vocabulary()):,} words, only espeak-ng's voices,
  no punctuation or capitals, no human speech, accents, reverberation or real noise. Expect nonsense on real
  recordings.
- Not finished: its training loss was still falling when training stopped (the table above); more epochs
  would lower its WER. What it is meant for already works: measuring how much an export, a runtime's front end or
  a precision variant changes recognition of speech the model did not memorise.

Rebuilding needs the same espeak-ng, torch and NeMo versions for bit-identical weights. Licence: Apache-2.0.
""", encoding="utf-8")


def epoch_counts(text: str) -> tuple[int, ...]:
    """`2` or `2,8`: the restart cycles' epoch counts (an empty cycle is dropped, so `0` means none)."""
    counts = tuple(int(part) for part in text.split(","))
    if any(count < 0 for count in counts):
        raise argparse.ArgumentTypeError(f"epoch counts must not be negative: {text}")
    return tuple(count for count in counts if count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo2sherpa.testing.train_small",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to (re)create")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="corpus directory (built there first if empty; default: a temporary one)")
    parser.add_argument("--train", type=int, default=12000, help="training utterances when building the corpus")
    parser.add_argument("--heldout", type=int, default=200, help="held-out utterances when building the corpus")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the first learning-rate cycle")
    parser.add_argument("--restart-epochs", type=epoch_counts, default=(2, 8, 8, 4),
                        help="epochs of each warm-restarted cycle after the first, comma-separated (0: none); the "
                             "default rebuilds the bundled model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bundle", type=int, default=100,
                        help="held-out utterances written beside the model (the WER is measured on all of them)")
    parser.add_argument("--state", type=Path, default=None,
                        help="training state file (default CORPUS/train_state.pt); an existing one is resumed")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in train_fixture: idle OpenMP workers must not spin
    import torch

    from nemo2sherpa.checkpoint.loading import quiet_nemo
    from nemo2sherpa.testing import corpus
    from nemo2sherpa.testing.train_fixture import add_transcribe_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        corpus_dir = args.corpus or scratch / "corpus"
        if not (corpus_dir / "train.jsonl").is_file():
            counts = corpus.build(corpus_dir, args.train, args.heldout, args.seed)
            print(f"built the corpus: {counts['train']} training, {counts['heldout']} held-out utterances")
        training, heldout = read_split(corpus_dir, "train"), read_split(corpus_dir, "heldout")
        print(f"corpus: {len(training)} training utterances ({sum(c.seconds for c in training) / 3600:.2f} h), "
              f"{len(heldout)} held out")
        with quiet_nemo():
            model = build_model([c.text for c in training], scratch)
        print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
        state = args.state or corpus_dir / "train_state.pt"
        with quiet_nemo():
            history = train(model, training, heldout, args.epochs, args.restart_epochs, args.seed, state)
            model.eval()
            add_transcribe_config(model)
            if args.out.exists():
                shutil.rmtree(args.out)
            args.out.mkdir(parents=True)
            model.save_to(str(args.out / "model.nemo"))
    write_heldout(args.out, heldout[:args.bundle])
    (args.out / "training_sentences.txt").write_text("".join(f"{c.text}\n" for c in training), encoding="utf-8")
    from nemo.collections.asr.models import ASRModel

    with quiet_nemo():
        restored = ASRModel.restore_from(str(args.out / "model.nemo"), map_location="cpu")
    final = corpus_wer([c.text for c in heldout], greedy_transcripts(restored, heldout))
    bundled = corpus_wer([c.text for c in heldout[:args.bundle]], greedy_transcripts(restored, heldout[:args.bundle]))
    # without the paths of the machine it ran on: the card is published with the model
    command = (f"python -m nemo2sherpa.testing.train_small --out {args.out.name} --corpus corpus "
               f"--epochs {args.epochs} --restart-epochs {','.join(map(str, args.restart_epochs))} --seed {args.seed}")
    write_card(args.out, command, restored, training, heldout, history, final, bundled, args.bundle, args.seed)
    print(f"wrote {args.out}: held-out WER {100 * final:.2f}% (NeMo greedy, restored model)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
