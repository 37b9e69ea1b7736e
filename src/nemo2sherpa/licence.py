"""The licence a published model carries: the Hub reads it from the card's `license:` key, users from its text.

Where it comes from, first found wins: publish --license, then what convert --license recorded in the manifest,
then the recipe catalog (the public checkpoints' licences). A local checkpoint has none of these unless the user
says, and publish then refuses: a model on the Hub without a licence cannot be reused lawfully by anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nemo2sherpa.errors import UserError

OTHER = "other"
# Licence ids as the Hub spells them (lowercase SPDX-like: cc-by-4.0, apache-2.0, mit, llama3, ...)
_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]{1,63}$")
URLS = {"cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
        "apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0"}
HOW = ("--license SPDX-ID (e.g. cc-by-4.0, apache-2.0), or --license 'other:NAME:URL' for a licence the Hub does "
       "not list")


@dataclass(frozen=True)
class Licence:
    id: str  # the Hub's licence id, or "other"
    name: str | None = None  # for "other": the licence's name
    link: str | None = None  # for "other": where its text is

    def front_matter(self) -> dict[str, Any]:
        if self.id != OTHER:
            return {"license": self.id}
        return {"license": OTHER, "license_name": self.name, "license_link": self.link}

    def text(self) -> str:
        """Markdown: the licence named, linked when its text has a known address."""
        if self.id == OTHER:
            return f"[{self.name}]({self.link})"
        url = URLS.get(self.id)
        return f"[{self.id.upper()}]({url})" if url else self.id

    def to_record(self) -> str:
        """As the manifest records it (and --license takes it)."""
        return self.id if self.id != OTHER else f"{OTHER}:{self.name}:{self.link}"


def parse_licence(value: str) -> Licence:
    """`cc-by-4.0` or `other:NAME:URL`; UserError otherwise."""
    text = value.strip()
    if text.lower().startswith(f"{OTHER}:"):
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[1].strip() or not re.match(r"^https?://\S+$", parts[2].strip()):
            raise UserError(f"--license {value!r}: a licence the Hub does not list is given as 'other:NAME:URL' "
                            "(its name, and the address of its text)")
        return Licence(OTHER, parts[1].strip(), parts[2].strip())
    if not _ID.match(text.lower()) or text.lower() == OTHER:
        raise UserError(f"--license {value!r} is not a licence id; give {HOW}")
    return Licence(text.lower())


def resolve_licence(option: str | None, source: dict[str, Any], recipe_licence: str | None) -> Licence | None:
    """The licence to publish under, or None when nothing names one."""
    for value in (option, source.get("license"), recipe_licence):
        if value:
            return parse_licence(str(value))
    return None
