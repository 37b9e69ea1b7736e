"""The model families nemo2sherpa exports, registered in one place, per directory layout.

A layout is the runtime a model directory is written for: sherpa-onnx's (the default, which validate and publish
run) or onnx-asr's. Each layout has its families, one per decoder branch a checkpoint can have (`convert --decoder`
names the branch, the same in every layout). Adding a family: write its module (a subclass of families.base.Family)
and add its instance to its layout in LAYOUTS. Convert, validate and publish find it here, by name (manifests and
reports record it) or by what a checkpoint has.
"""

from __future__ import annotations

from pathlib import Path

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import DEFAULT_LAYOUT, Family, FamilyFiles, ModelSpec, Role
from nemo2sherpa.families.ctc import CTC
from nemo2sherpa.families.onnx_asr import ONNX_ASR_CTC, ONNX_ASR_TRANSDUCER
from nemo2sherpa.families.streaming import STREAMING_CTC, STREAMING_TRANSDUCER
from nemo2sherpa.families.transducer import TRANSDUCER

#: layout -> its families by name, the preferred first: a checkpoint that several can export gets the first by default
#: (a cache-aware one its streaming transducer; `--decoder transducer` converts it for offline use)
LAYOUTS: dict[str, dict[str, Family]] = {
    DEFAULT_LAYOUT: {family.name: family for family in (STREAMING_TRANSDUCER, STREAMING_CTC, TRANSDUCER, CTC)},
    "onnx-asr": {family.name: family for family in (ONNX_ASR_TRANSDUCER, ONNX_ASR_CTC)},
}
#: the sherpa-onnx layout's families: the ones validate and publish run, and that a directory's files identify
FAMILIES: dict[str, Family] = LAYOUTS[DEFAULT_LAYOUT]
#: what `convert --decoder` accepts besides a branch's name
BOTH = "both"

__all__ = ["BOTH", "DEFAULT_LAYOUT", "FAMILIES", "LAYOUTS", "Family", "FamilyFiles", "ModelSpec", "Role", "branches",
           "families_for", "family_named", "family_of_files", "registered_family"]


def branches() -> list[str]:
    """The decoder branches `convert --decoder` can name, over every layout."""
    return list(dict.fromkeys(family.branch for layout in LAYOUTS.values() for family in layout.values()))


def registered_family(name: str) -> Family | None:
    """Any layout's family of this name (a manifest names it), or None."""
    return next((layout[name] for layout in LAYOUTS.values() if name in layout), None)


def family_named(name: str) -> Family:
    """The family of this name in any layout (manifests and reports record it)."""
    family = registered_family(name)
    if family is None:
        known = ", ".join(name for layout in LAYOUTS.values() for name in layout)
        raise UserError(f"unknown model family {name!r}; nemo2sherpa knows {known}")
    return family


def layout_families(layout: str) -> dict[str, Family]:
    families = LAYOUTS.get(layout)
    if families is None:
        raise UserError(f"unknown layout {layout!r}; nemo2sherpa writes {', '.join(LAYOUTS)}")
    return families


def families_for(facts: ModelFacts, decoder: str | None, source: Path | str,
                 layout: str = DEFAULT_LAYOUT) -> list[Family]:
    """The families of a layout to export for a checkpoint: its first branch (decoder None), the one named, or every
    one it has (`both`); a one-line refusal naming the checkpoint when what was asked cannot be exported.

    Which branches a checkpoint has is what the sherpa-onnx families can export; a layout's family may still refuse
    one of them (onnx-asr computes only some features), and then says why."""
    members = layout_families(layout)
    present = [family for family in FAMILIES.values() if family.refusal(facts) is None]
    if decoder is None:
        if not present:
            raise UserError.about(source, f"{facts.model_class}: no family of nemo2sherpa can export it")
        wanted, asked = [present[0].branch], f"--layout {layout}"
    elif decoder == BOTH:
        present = [family for family in present if family.online == present[0].online]  # a hybrid's two branches
        if len(present) < 2:
            raise UserError.about(source, f"--decoder both needs a hybrid model; {facts.model_class} has only "
                                          f"{present[0].title if present else 'no exportable decoder'}")
        wanted, asked = [family.branch for family in present], "--decoder both"
    else:
        wanted, asked = [decoder], f"--decoder {decoder}"
    chosen = [_branch_family(members, branch, layout, source) for branch in wanted]
    for family in chosen:
        reason = family.refusal(facts)
        if reason:
            raise UserError.about(source, f"{asked}: {reason}")
        if len(chosen) > 1 and family.alone:
            raise UserError.about(source, f"{asked}: {family.alone}")
    return chosen


def _branch_family(members: dict[str, Family], branch: str, layout: str, source: Path | str) -> Family:
    family = next((f for f in members.values() if f.branch == branch), None)
    if family is None:
        raise UserError.about(source, f"--decoder {branch}: the {layout} layout has no such decoder "
                                      f"(it has {', '.join(f.branch for f in members.values())})")
    return family


def family_of_files(directory: Path, precision: str) -> Family | None:
    """The family whose conventional files of this precision, vocabulary included, are in a directory without a
    manifest (someone else's export), or None. The vocabulary tells the layouts apart where the graphs' names do not
    (a CTC model.onnx beside tokens.txt is sherpa-onnx's, beside vocab.txt onnx-asr's)."""
    for layout in LAYOUTS.values():
        for family in layout.values():
            names = [*family.files(precision).values(), family.tokens_file]
            if all((directory / name).is_file() for name in names) and \
                    family.claims(_metadata(directory / family.files(precision)[family.encoder_role.name])):
                return family
    return None


def _metadata(graph: Path) -> dict[str, str]:
    """A graph's metadata, read without its weights; empty when it cannot be read (the contract check says why)."""
    import onnx

    from nemo2sherpa.graphs.rewriting import metadata_of

    try:
        return metadata_of(onnx.load(str(graph), load_external_data=False))
    except Exception:  # noqa: BLE001 - a broken file is reported by the contract check, not here
        return {}
