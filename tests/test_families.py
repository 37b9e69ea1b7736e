"""A model family is registered in one place (families.FAMILIES): manifests, directory detection, the contract check
and the CLI find a new family there, with no other code changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo2sherpa import families
from nemo2sherpa.errors import UserError
from nemo2sherpa.families.base import PRECISIONS, Family, Role


class EchoFamily(Family):
    """A one-graph family whose contract only requires a metadata key: enough to see the seam carry it."""

    name = "echo"
    title = "echo test family"
    roles = (Role("echo", holds_encoder=True),)
    sherpa_model_type = "echo"

    def refusal(self, facts):
        return None

    def export_modules(self, model):
        return {"echo": model}

    def probes(self, model, frames, generator):
        return []

    def metadata(self, facts, url, comment):
        return {"echo": "1"}

    def check_contract(self, graphs, pieces, manifest, result):
        metadata = {p.key: p.value for p in graphs["echo"].metadata_props}
        if metadata.get("echo") != "1":
            result.fail("echo metadata missing")
        result.details["echo_checked"] = True
        return None

    def graph_decoder(self, paths, spec, threads=1, provider="cpu"):
        raise NotImplementedError

    def nemo_output(self, model, encoded, encoded_length):
        raise NotImplementedError

    def runtime_recognizer(self, paths, tokens, *, provider, threads, sample_rate, feature_dim):
        raise NotImplementedError

    def usage(self, files, tokens, *, feature_dim, sample_rate, provider_note):
        return f"echo {files['echo']}"


@pytest.fixture
def echo(monkeypatch):
    family = EchoFamily()
    monkeypatch.setitem(families.FAMILIES, family.name, family)
    return family


def _graph(path: Path, metadata: dict[str, str]) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "echo",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 80, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 80, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def test_every_registered_family_names_its_files_apart():
    """--decoder both writes a hybrid's two families into one directory (both offline, or both streaming): no file
    may be claimed twice among them."""
    for online in (False, True):
        names = [name for family in families.FAMILIES.values() if family.online == online
                 for precision in PRECISIONS for name in family.files(precision).values()]
        assert names and len(names) == len(set(names))
    assert all(sum(r.holds_encoder for r in f.roles) == 1 for f in families.FAMILIES.values())


def test_a_registered_family_is_found_by_directory_manifest_and_contract(echo, tmp_path):
    from nemo2sherpa.manifest import Manifest
    from nemo2sherpa.validate.contract_check import check_contract
    from nemo2sherpa.validate.model_dir import open_model_dir

    directory = tmp_path / "echo-model"
    directory.mkdir()
    _graph(directory / "echo.onnx", {"echo": "1", "vocab_size": "1"})
    (directory / "tokens.txt").write_text("a 0\n<blk> 1\n")
    assert families.family_of_files(directory, "fp32") is echo
    model = open_model_dir(directory)
    assert model.family is echo and model.graphs == {"echo": directory / "echo.onnx"}
    assert model.encoder.name == "echo.onnx"
    result, spec = check_contract(model)
    assert result.details["echo_checked"] is True and result.details["family"] == "echo"

    manifest = {"format": "nemo2sherpa-manifest", "format_version": 2, "tool": {"version": "0"}, "created": "x",
                "source": {}, "versions": {}, "export": {}, "files": {},
                "model": {"architecture": {}, "decoder_kind": "ctc"},
                "families": {"echo": {"metadata": {"echo": "1"}, "variants": {"fp32": {"echo": "echo.onnx"}}}}}
    parsed = Manifest.from_dict(manifest)
    assert parsed.default_family == "echo" and parsed.variants["fp32"].files == {"echo": "echo.onnx"}
    assert parsed.family().model_type == "echo"  # defaulted from the registered family


def test_an_unregistered_family_is_a_clear_error():
    from nemo2sherpa.manifest import Manifest

    with pytest.raises(UserError, match="families.'echo' is not a model family"):
        Manifest.from_dict({"format": "nemo2sherpa-manifest", "format_version": 2, "tool": {"version": "0"},
                            "created": "x", "source": {}, "versions": {}, "export": {}, "files": {},
                            "model": {"architecture": {}, "decoder_kind": "ctc"},
                            "families": {"echo": {"metadata": {}, "variants": {}}}})
    with pytest.raises(UserError, match="unknown model family 'echo'"):
        families.family_named("echo")


def test_a_format_1_manifest_reads_as_one_transducer():
    from nemo2sherpa.manifest import Manifest

    v1 = {"format": "nemo2sherpa-manifest", "format_version": 1, "tool": {"version": "0"}, "created": "x",
          "source": {}, "versions": {}, "export": {}, "files": {},
          "model": {"architecture": {}, "decoder_kind": "tdt"},
          "sherpa_onnx": {"model_type": "nemo_transducer", "metadata": {"url": "u#tdt"}},
          "variants": {"fp32": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "joiner": "joiner.onnx"}}}
    parsed = Manifest.from_dict(json.loads(json.dumps(v1)))
    assert list(parsed.families) == ["transducer"] and parsed.sherpa_metadata == {"url": "u#tdt"}
    assert parsed.to_dict()["format_version"] == 2 and "families" in parsed.to_dict()
