"""Fuzzing the readers of untrusted checkpoints: random bytes, mutated archives (plain and gzip) and mutated configs
(text and structure) must end in UserError or success, never in another exception and never in a hang.

The readers fuzzed are everything convert and validate --nemo run before NeMo or torch: the archive's members, the
config (size, aliases, references, classes), the model facts, the size against the weights, the tokenizer artifacts
and the weights member's first bytes. Bounded: each test stays well under 30 s (derandomized, so every run explores
the same examples and a failure reproduces).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import signal
import tarfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nemo2sherpa.checkpoint.archive import CONFIG_NAME, WEIGHTS_NAME, NemoArchive
from nemo2sherpa.checkpoint.config import facts_from_config
from nemo2sherpa.checkpoint.config_reading import parse_config
from nemo2sherpa.checkpoint.model_size import check_model_size
from nemo2sherpa.errors import UserError

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "nemo2sherpa" / "fixtures" / "tiny-hybrid-en" / "model.nemo"
FUZZ = settings(max_examples=int(os.environ.get("N2S_FUZZ_EXAMPLES", 120)), deadline=None,
                derandomize="N2S_FUZZ_EXAMPLES" not in os.environ, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SECONDS_PER_EXAMPLE = 10  # one example's ceiling: a hang fails the test instead of stalling the suite

pytestmark = pytest.mark.skipif(not BUNDLED.is_file(), reason="the bundled tiny-hybrid-en checkpoint is missing")


@contextlib.contextmanager
def deadline(seconds: int = SECONDS_PER_EXAMPLE) -> Iterator[None]:
    def expired(signum, frame):
        raise AssertionError(f"a reader took more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_checkpoint(path: Path, scratch: Path) -> None:
    """What convert reads before NeMo is imported, and vet_checkpoint before NeMo's restore_from."""
    with NemoArchive(path) as archive:
        config = parse_config(archive.read_text(CONFIG_NAME), path)
        facts = facts_from_config(config, path)
        check_model_size(config, facts, archive.members[WEIGHTS_NAME].size, path)
        tokenizer = config.get("tokenizer")
        for value in (tokenizer.values() if isinstance(tokenizer, dict) else ()):
            if isinstance(value, str) and value.startswith("nemo:"):
                archive.extract_artifact(value, scratch)
        with archive.open_weights(scratch) as stream:
            stream.read(4096)


def read_config(text: str) -> None:
    source = Path("fuzzed.nemo")
    config = parse_config(text, source)
    check_model_size(config, facts_from_config(config, source), 1_244_431, source)


def survives(read, *args: Any) -> None:
    """The reader either accepts the input or refuses it with a one-line UserError naming the file."""
    with deadline():
        try:
            read(*args)
        except UserError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(("fuzzed.nemo", str(args[0]))), str(exc)


@pytest.fixture(scope="module")
def original() -> bytes:
    return BUNDLED.read_bytes()


@pytest.fixture(scope="module")
def config_text() -> str:
    with tarfile.open(BUNDLED) as tar:
        return tar.extractfile(f"./{CONFIG_NAME}").read().decode()


def _scratch(tmp_path: Path, name: str) -> tuple[Path, Path]:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return tmp_path / name, scratch


@FUZZ
@given(st.binary(max_size=8192))
def test_random_bytes_are_refused_or_read(tmp_path, data):
    path, scratch = _scratch(tmp_path, "fuzzed.nemo")
    path.write_bytes(data)
    survives(read_checkpoint, path, scratch)


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
                     min_size=1, max_size=8)


def _mutate(data: bytes, edits: list, cut: float | None, head: bool) -> bytes:
    """Bytes overwritten at the given fractions (of the first 16 KiB, where the headers and the config are, when
    `head`), then cut at `cut` of the length."""
    buffer = bytearray(data)
    span = min(len(buffer), 16384) if head else len(buffer)
    for where, new in edits:
        at = int(where * span)
        buffer[at:at + len(new)] = new
    return bytes(buffer[: int(cut * len(buffer))] if cut is not None else buffer)


@FUZZ
@given(mutations, st.one_of(st.none(), st.floats(0, 1)), st.booleans(), st.booleans())
def test_mutated_archives_are_refused_or_read(tmp_path, original, edits, cut, head, compressed):
    path, scratch = _scratch(tmp_path, "fuzzed.nemo")
    data = gzip.compress(original, compresslevel=1, mtime=0) if compressed else original
    path.write_bytes(_mutate(data, edits, cut, head))
    survives(read_checkpoint, path, scratch)


SNIPPETS = [
    "&a", "*a", "<<: *a", "${", "}", "${encoder}", "${.d_model}", "${oc.env:HOME}", "${..x}", "\\${x}",
    "!!python/name:os.system", "!!binary aGk=", "!!set {a, b}", "[" * 80, "{" * 80, "- ", ": ", "? ", ".inf",
    "-.inf", ".nan", "1e309", "~", "null", "99999999999999999999999999999", "-1", "0", "\t", "\x00", "\ufeff", "é",
    "'", '"', "#", "%YAML 1.1", "---", "...", "|", ">", "&b [*a, *a, *a, *a]",
]


@FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(SNIPPETS) | st.text(max_size=12),
                          st.integers(0, 8)), min_size=1, max_size=6))
def test_mutated_config_text_is_refused_or_read(config_text, edits):
    text = config_text
    for where, snippet, removed in edits:
        at = int(where * len(text))
        text = text[:at] + snippet + text[at + removed:]
    survives(read_config, text)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**40) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SECTIONS = ["target", "tokenizer", "preprocessor", "encoder", "decoder", "joint", "decoding", "model_defaults",
            "aux_ctc", "spec_augment", "labels", "model", "sample_rate"]


def _keys(node: Any, path: tuple = ()) -> list[tuple]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _keys(value, (*path, key))
    return found


@FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), values), min_size=1, max_size=5),
       st.lists(st.tuples(st.sampled_from(SECTIONS), values), max_size=2))
def test_mutated_config_values_are_refused_or_read(config_text, replacements, sections):
    """Any setting replaced by any value (numbers of every size, NaN, infinities, strings, lists, mappings)."""
    config = yaml.safe_load(config_text)
    paths = _keys(config)
    for where, value in replacements:
        path = paths[int(where * len(paths))]
        node = config
        for key in path[:-1]:  # an earlier replacement may have removed the way there
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = value
    for section, value in sections:
        config[section] = value
    survives(read_config, yaml.safe_dump(config, allow_unicode=True))


def test_the_fuzzed_readers_accept_the_original(tmp_path, original, config_text):
    """The baseline: the unmutated checkpoint and config are read, so the fuzz explores near a valid input."""
    path, scratch = _scratch(tmp_path, "original.nemo")
    path.write_bytes(original)
    read_checkpoint(path, scratch)
    read_config(config_text)
    with tarfile.open(fileobj=io.BytesIO(original)) as tar:
        assert tar.getmember(f"./{CONFIG_NAME}").size > 0
