"""Property-based tests of the parsers that read files anyone can edit: tokens.txt, manifest.json and dataset JSONL.

Each parser, fed arbitrary input, either returns a value or raises UserError (one line, exit 1 in the CLI) and
nothing else; what the writers produce is read back unchanged. Pure Python: no NeMo, no torch.
"""

from __future__ import annotations

import copy
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import Architecture, ModelFacts
from nemo2sherpa.manifest import FamilyRecord, FileRecord, Manifest, Variant, file_problems, parse_json, read_manifest
from nemo2sherpa.tokens_txt import BLANK, parse_tokens, render_tokens
from nemo2sherpa.validate.audio import parse_dataset_line, read_dataset, unique_names

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------------- tokens.txt

# A piece sherpa-onnx can hold: non-empty, no whitespace of any kind (Python's notion, a superset of C's).
pieces = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
).filter(lambda p: not any(ch.isspace() for ch in p))


@SETTINGS
@given(st.lists(pieces, min_size=0, max_size=60))
def test_tokens_round_trip(vocabulary):
    text = render_tokens(vocabulary)
    assert parse_tokens(text) == [*vocabulary, BLANK]
    # sherpa-onnx reads '<piece> <id>' per '\n'-separated line: the file must split the same way for it
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == len(vocabulary) + 2
    assert all(line.rsplit(" ", 1)[1] == str(i) for i, line in enumerate(lines[:-1]))


@SETTINGS
@given(st.text())
@example("a 1_0\n")  # int() takes these; sherpa-onnx does not
@example("a \u0663\n")  # Arabic-Indic digit three
@example("a +0\n")
@example("a " + "9" * 5000 + "\n")  # int() refuses 4301+ digits with ValueError
@example("a -1\n")
@example("\x1c\x1d\x1e\x85\u2028\u2029")
@example("a 0\nb 0\n")
@example("a 0\nb 2\n")
@example("")
def test_parse_tokens_raises_only_user_errors(text):
    try:
        result = parse_tokens(text, "tokens.txt")
    except UserError as exc:
        assert str(exc).startswith("tokens.txt: ") and "\n" not in str(exc)
        return
    assert result and all(isinstance(p, str) and p for p in result)


@pytest.mark.parametrize("text, fragment", [
    ("a 1_0\n", "non-integer id"),
    ("a +0\n", "non-integer id"),
    ("a \u0663\n", "non-integer id"),
    ("a -3\n", "negative id"),
    ("a " + "9" * 5000 + "\n", "too large"),
    ("a 0\nb 0\n", "repeats id 0"),
    ("a 0\nb 2\n", "not contiguous"),
    ("a b 0\n", "is not '<piece> <id>'"),
])
def test_parse_tokens_names_the_problem(text, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_tokens(text)


@pytest.mark.parametrize("piece", ["", "a b", "a\tb", "a\u00a0b", "a\u2028b", "a\x00b", "\ud800"])
def test_render_refuses_pieces_that_would_shift_ids(piece):
    with pytest.raises(UserError):
        render_tokens(["x", piece])


# ---------------------------------------------------------------------------------------------------- manifest.json

def valid_manifest() -> Manifest:
    facts = ModelFacts(
        architecture=Architecture(model_class="EncDecRNNTBPEModel", encoder_layers=2, d_model=64, attention_heads=4,
                                  ff_expansion_factor=4, conv_kernel_size=9, subsampling_factor=8,
                                  subsampling_conv_channels=64, attention="rel_pos", att_context_size=(-1, -1),
                                  xscaling=True, use_bias=True, pos_emb_max_len=5000, mels=80, vocab_size=64,
                                  durations=(0, 1, 2, 3, 4), pred_hidden=64, pred_rnn_layers=1, joint_hidden=64),
        decoder_kind="tdt", normalize="per_feature", sample_rate=16000, max_symbols_per_frame=10,
        frontend={"window_size": 0.025, "dither": 1e-05}, parameters=123456,
    )
    return Manifest(
        tool_version="0.1.0", created="2025-01-01T00:00:00+00:00",
        source={"kind": "bundled", "recipe": "tiny-tdt-en", "filename": "model.nemo", "sha256": "ab" * 32,
                "size": 1484800},
        model=facts,
        versions={"nemo2sherpa": "0.1.0"}, export={"opset": 17, "external_data": {}},
        families={"transducer": FamilyRecord(
            variants={"fp32": Variant({"encoder": "encoder.onnx", "decoder": "decoder.onnx", "joiner": "joiner.onnx"})},
            metadata={"vocab_size": "64", "url": "nemo2sherpa://local/tdt"}, model_type="nemo_transducer")},
        files={"encoder.onnx": FileRecord("0" * 64, 10), "tokens.txt": FileRecord("f" * 64, 0)},
        random_weights=False, conversion_seconds=1.5,
    )


def test_a_valid_manifest_round_trips(tmp_path):
    manifest = valid_manifest()
    data = json.loads(json.dumps(manifest.to_dict()))
    again = Manifest.from_dict(data)
    assert again.to_dict() == manifest.to_dict()
    manifest.write(tmp_path)
    assert read_manifest(tmp_path).to_dict() == manifest.to_dict()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)


def _paths(node, prefix=()):
    """Every (path, value) inside a JSON-like tree."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


VALID = valid_manifest().to_dict()
VALID_PATHS = [path for path, _ in _paths(VALID) if path]


@SETTINGS
@given(json_values)
@example({"format": "nemo2sherpa-manifest", "format_version": 1})
@example({**VALID, "files": {"encoder.onnx": {"sha256": "0" * 64, "size": float("inf")}}})
@example({**VALID, "model": {**VALID["model"], "sample_rate": float("inf")}})
@example({**VALID, "model": {**VALID["model"], "architecture": "abc"}})
@example({**VALID, "format_version": True})
def test_manifest_from_arbitrary_json_raises_only_user_errors(data):
    try:
        Manifest.from_dict(data, "manifest.json")
    except UserError as exc:
        assert str(exc).startswith("manifest.json: ")


@SETTINGS
@given(st.sampled_from(VALID_PATHS), json_values)
def test_a_manifest_with_one_value_replaced_is_read_or_refused_cleanly(path, value):
    """Mutations of a valid manifest reach every check; whatever is accepted has the types the readers rely on."""
    data = copy.deepcopy(VALID)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    try:
        manifest = Manifest.from_dict(data, "manifest.json")
    except UserError:
        return
    facts = manifest.model
    assert isinstance(facts.vocab_size, int) and isinstance(facts.sample_rate, int)
    assert all(isinstance(d, int) for d in facts.durations)
    assert isinstance(facts.joiner_width, int) and isinstance(facts.is_tdt, bool)
    assert all(isinstance(r.size, int) and len(r.sha256) == 64 for r in manifest.files.values())
    for variant in manifest.variants.values():
        assert all("/" not in name and name not in ("", ".", "..") for name in variant.graph_files().values())
    assert isinstance(manifest.random_weights, bool)
    assert manifest.source.get("sha256") is None or isinstance(manifest.source["sha256"], str)


@pytest.mark.parametrize("name", ["../encoder.onnx", "/etc/passwd", "sub/encoder.onnx", "a\\b.onnx", ".."])
def test_a_variant_naming_a_file_outside_the_directory_is_refused(name):
    data = copy.deepcopy(VALID)
    data["families"]["transducer"]["variants"]["fp32"]["encoder"] = name
    with pytest.raises(UserError, match="not a plain file name"):
        Manifest.from_dict(data, "manifest.json")


def test_files_outside_the_directory_are_never_read(tmp_path):
    """validate hashes what the manifest lists: a tampered list naming ../secret must not be read (or its size leak
    into a report)."""
    (tmp_path / "secret").write_bytes(b"x" * 5)
    model = tmp_path / "model"
    model.mkdir()
    problems = file_problems(model, {"../secret": FileRecord("0" * 64, 5), "/etc/hostname": FileRecord("0" * 64, 1)})
    assert len(problems) == 2 and all("not a plain file name" in p and "not read" in p for p in problems)


@pytest.mark.parametrize("text", ["[" * 100000, '{"a": ' + "1" * 5000 + "}", '{"a": NaN}', "\ud800", "{"])
def test_hostile_manifest_json_is_a_user_error(tmp_path, text):
    with pytest.raises(UserError, match="manifest.json"):
        parse_json(text, "manifest.json")
    (tmp_path / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(UserError, match="manifest.json"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------------------------------------------- dataset JSONL

SOURCE = Path("data.jsonl")


@SETTINGS
@given(st.text())
@example("[" * 100000)
@example('{"audio": ' + "1" * 5000 + "}")
@example('{"audio": "a.wav", "text": "\\ud800"}')
@example('{"audio": "a\\u0000.wav"}')
@example('{"audio": "  "}')
@example('{"audio": "a.wav", "text": 5}')
@example("null")
def test_dataset_lines_raise_only_user_errors(line):
    try:
        parsed = parse_dataset_line(line, 7, SOURCE)
    except UserError as exc:
        assert str(exc).startswith("data.jsonl: line 7 ")
        return
    if parsed is None:
        assert not line.strip()
        return
    audio, text = parsed
    assert isinstance(audio, str) and audio.strip() and "\x00" not in audio
    assert text is None or isinstance(text, str)
    (audio + (text or "")).encode("utf-8")  # reports are written as UTF-8


@SETTINGS
@given(st.dictionaries(st.sampled_from(["audio", "audio_filepath", "path", "text", "transcript", "duration"]),
                       st.none() | st.integers() | st.text(max_size=20), max_size=6))
def test_dataset_objects_raise_only_user_errors(entry):
    line = json.dumps(entry)
    try:
        parsed = parse_dataset_line(line, 1, SOURCE)
    except UserError:
        return
    audio = next(entry[k] for k in ("audio", "audio_filepath", "path") if k in entry)
    assert parsed is not None and parsed[0] == audio


@SETTINGS
@given(st.text(alphabet=string.ascii_letters + "/._-", min_size=1, max_size=20).filter(lambda s: s.strip()),
       st.none() | st.text(max_size=30))
def test_dataset_line_round_trip(audio, text):
    entry = {"audio": audio} if text is None else {"audio": audio, "text": text}
    assert parse_dataset_line(json.dumps(entry), 1, SOURCE) == (audio, text)
    assume(text is not None)
    assert parse_dataset_line(json.dumps({"audio_filepath": audio, "transcript": text}), 1, SOURCE) == (audio, text)


def test_repeated_clip_names_stay_distinct(tmp_path):
    """Clips are keyed by name (references, transcripts, report rows): a/x.wav and b/x.wav must not collide."""
    assert unique_names(["x.wav", "y.wav", "x.wav", "x.wav", "x.wav (2)"]) == \
        ["x.wav", "y.wav", "x.wav (2)", "x.wav (3)", "x.wav (2) (2)"]
    import numpy as np
    import soundfile as sf

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        sf.write(str(tmp_path / sub / "x.wav"), np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "data.jsonl").write_text('{"audio": "a/x.wav"}\n\n{"audio": "b/x.wav", "text": "hi"}\n')
    clips = read_dataset(tmp_path / "data.jsonl")
    assert [c.name for c in clips] == ["x.wav", "x.wav (2)"] and clips[1].text == "hi"
