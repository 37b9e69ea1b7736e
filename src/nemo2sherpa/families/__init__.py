"""The model families nemo2sherpa exports, registered in one place.

Adding a family: write its module (a subclass of families.base.Family) and add its instance to FAMILIES. Convert,
validate and publish find it here, by name (manifests and reports record it) or by what a checkpoint has.
"""

from __future__ import annotations

from pathlib import Path

from nemo2sherpa.errors import UserError
from nemo2sherpa.facts import ModelFacts
from nemo2sherpa.families.base import Family, FamilyFiles, ModelSpec, Role
from nemo2sherpa.families.ctc import CTC
from nemo2sherpa.families.transducer import TRANSDUCER

#: every family, the preferred first: a checkpoint that several can export gets the first by default
FAMILIES: dict[str, Family] = {family.name: family for family in (TRANSDUCER, CTC)}
#: what `convert --decoder` accepts besides a family's name
BOTH = "both"

__all__ = ["BOTH", "FAMILIES", "Family", "FamilyFiles", "ModelSpec", "Role", "families_for", "family_named",
           "family_of_files"]


def family_named(name: str) -> Family:
    family = FAMILIES.get(name)
    if family is None:
        raise UserError(f"unknown model family {name!r}; nemo2sherpa knows {', '.join(FAMILIES)}")
    return family


def families_for(facts: ModelFacts, decoder: str | None, source: Path | str) -> list[Family]:
    """The families to export for a checkpoint: the first that can (decoder None), the one named, or every one
    that can (`both`); a one-line refusal naming the checkpoint when what was asked cannot be exported."""
    able = [family for family in FAMILIES.values() if family.refusal(facts) is None]
    if decoder is None:
        if not able:
            raise UserError.about(source, f"{facts.model_class}: no family of nemo2sherpa can export it")
        return able[:1]
    if decoder == BOTH:
        if len(able) < 2:
            raise UserError.about(source, f"--decoder both needs a hybrid model; {facts.model_class} has only "
                                          f"{able[0].title if able else 'no exportable decoder'}")
        return able
    family = family_named(decoder)
    reason = family.refusal(facts)
    if reason:
        raise UserError.about(source, f"--decoder {decoder}: {reason}")
    return [family]


def family_of_files(directory: Path, precision: str) -> Family | None:
    """The family whose conventional files of this precision are in a directory without a manifest (someone else's
    export), or None."""
    for family in FAMILIES.values():
        if all((directory / name).is_file() for name in family.files(precision).values()):
            return family
    return None
