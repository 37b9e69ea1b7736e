"""Read model_config.yaml without trusting it: its size, nesting, YAML aliases and ${...} references are bounded while
it is read, so an alias or interpolation bomb is refused in milliseconds instead of growing for minutes.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from nemo2sherpa.checkpoint.archive import MAX_CONFIG_BYTES
from nemo2sherpa.errors import UserError

MAX_DEPTH = 64  # model configs nest 4 or 5 levels
MAX_CHAIN = 100  # nodes being resolved at once (nesting plus references to references): Python's stack is not endless
MAX_EXPANDED = 4 * MAX_CONFIG_BYTES  # the config once its YAML aliases and ${...} references are expanded
_NODE_COST = 8  # what one node counts towards MAX_EXPANDED besides its text: containers of empty strings are not free
_PLAIN = (str, int, float, bool, type(None))
_REFERENCE = re.compile(r"\$\{([^${}\\]*)\}")
_KEY_PATH = re.compile(r"(\.*)((?:[\w-]+)(?:\.[\w-]+|\[\d+\])*)")
_KEY = re.compile(r"[\w-]+|\[\d+\]")
Where = tuple  # a node's place in the config: its keys and list indices from the top


def parse_config(text: str, source: Path) -> dict[str, Any]:
    """The config as plain containers with every ${...} reference resolved.

    A config from the internet can be a bomb: a few kilobytes of YAML aliases ("billion laughs") or ${...}
    references that expand to gigabytes while OmegaConf builds them, or nesting deep enough to exhaust the parser's
    recursion. Its size, depth and expanded size are bounded from the YAML event stream before anything is built, and
    references are resolved here under the same bound (never by OmegaConf, never through a resolver such as oc.env)."""
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise UserError.about(source, f"model_config.yaml is larger than the {MAX_CONFIG_BYTES} bytes a model config "
                                      "may be; refusing it")
    _check_yaml_shape(text, source)
    data = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise UserError.about(source, "model_config.yaml is not a mapping")
    container = _References(data, source).resolved()
    # Some checkpoints wrap the model config in a top-level 'model' key (a training config saved as is).
    if "encoder" not in container and isinstance(container.get("model"), dict):
        container = container["model"]
    return container


def _event_loader() -> type:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster, same events


def _check_yaml_shape(text: str, source: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH and aliases that expand past MAX_EXPANDED, from the parser's events:
    nothing is composed yet, so neither recursion nor alias copies can run away."""
    import yaml

    anchors: dict[str, int] = {}
    open_nodes: list[list[Any]] = []  # [anchor, size so far] of each open mapping or sequence
    total = 0
    try:
        for event in yaml.parse(text, Loader=_event_loader()):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if len(open_nodes) >= MAX_DEPTH:
                    raise UserError.about(source, f"model_config.yaml nests deeper than {MAX_DEPTH} levels; "
                                                  "refusing it")
                open_nodes.append([event.anchor, _NODE_COST])
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, size = open_nodes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, size = event.anchor, _NODE_COST + len(event.value)
            elif isinstance(event, yaml.AliasEvent):
                if any(node[0] == event.anchor for node in open_nodes):
                    raise UserError.about(source, f"model_config.yaml has a YAML alias *{event.anchor} inside the "
                                                  "node it names (a recursive structure); refusing it")
                anchor, size = None, anchors.get(event.anchor, 0)  # an undefined alias: the loader reports it
            else:
                continue
            if anchor is not None:
                anchors[anchor] = size
            if open_nodes:
                open_nodes[-1][1] += size
                size = open_nodes[-1][1]
            else:
                total += size
                size = total
            if size > MAX_EXPANDED:
                raise UserError.about(source, f"model_config.yaml expands to more than {MAX_EXPANDED} bytes through "
                                              "its YAML aliases (a 'billion laughs' bomb?); refusing it")
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise UserError.about(source, f"model_config.yaml cannot be parsed ({type(exc).__name__}: "
                                      f"{_first_line(exc)})") from None


def _load_yaml(text: str, source: Path) -> Any:
    """The YAML as Python data, read the way OmegaConf.create reads it (its loader: floats such as 1e-5, duplicate
    keys refused), without building OmegaConf nodes (seconds per megabyte)."""
    import yaml

    try:
        from omegaconf._utils import get_yaml_loader
    except ImportError:  # pragma: no cover - an OmegaConf that moved its loader
        loader: type = yaml.SafeLoader
    else:
        loader = get_yaml_loader()
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise UserError.about(source, f"model_config.yaml cannot be parsed ({type(exc).__name__}: "
                                      f"{_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:3])[:300] if lines else type(exc).__name__


def _dotted(path: Where) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) and not isinstance(key, bool) else (f".{key}" if text else str(key))
    return text or "(top level)"


class _References:
    """Resolves ${a.b}, ${.sibling} and ${..uncle} the way OmegaConf does, with the expansion bounded.

    Every use of a reference counts the full size of what it names against MAX_EXPANDED, so chains of references that
    double at each step are refused after a few steps instead of filling memory. Resolvers (${oc.env:HOME}, ${eval:
    ...}), escapes and nested references are refused: model configs saved by NeMo hold resolved values, and a config
    that asks to read the environment has no business doing so."""

    def __init__(self, root: dict[str, Any], source: Path) -> None:
        self.root, self.source = root, source
        self.done: dict[Where, tuple[Any, int]] = {}
        self.active: set[Where] = set()
        self.spent = 0

    def resolved(self) -> dict[str, Any]:
        return self._node(self.root, ())[0]

    def _refuse(self, path: Where, problem: str) -> UserError:
        return UserError.about(self.source, f"model_config.yaml: {_dotted(path)} {problem}")

    def _node(self, node: Any, path: Where) -> tuple[Any, int]:
        """The resolved copy of `node` (which sits at `path`) and its size."""
        if path in self.done:
            return self.done[path]
        if path in self.active:
            raise self._refuse(path, "refers to itself through ${...} references; refusing it")
        if len(self.active) > MAX_CHAIN:
            raise self._refuse(path, f"is reached through more than {MAX_CHAIN} nested sections and references to "
                                     "references; refusing it")
        if isinstance(node, dict):
            self.active.add(path)
            out: Any = {}
            size = _NODE_COST
            for key, value in node.items():
                if not isinstance(key, (str, int, float, bool)):
                    raise self._refuse(path, f"has a key of type {type(key).__name__}; refusing it")
                out[key], part = self._node(value, (*path, key))
                size += part
            self.active.discard(path)
        elif isinstance(node, list):
            self.active.add(path)
            out, size = [], _NODE_COST
            for index, value in enumerate(node):
                item, part = self._node(value, (*path, index))
                out.append(item)
                size += part
            self.active.discard(path)
        elif isinstance(node, str) and "${" in node:
            self.active.add(path)
            out, size = self._string(node, path)
            self.active.discard(path)
            self.done[path] = (out, size)
        elif isinstance(node, _PLAIN):
            out, size = node, _NODE_COST + (len(node) if isinstance(node, str) else 0)
        else:
            raise self._refuse(path, f"holds a {type(node).__name__}, not a number, string, list or mapping; "
                                     "refusing it")
        return out, size

    def _string(self, text: str, path: Where) -> tuple[Any, int]:
        pieces = _REFERENCE.split(text)
        literals, names = pieces[0::2], pieces[1::2]
        if "\\" in text or any("${" in literal for literal in literals):
            raise self._refuse(path, f"has a nested, escaped or unterminated ${{...}} ({text[:80]!r}); refusing it")
        if len(names) == 1 and not literals[0] and not literals[1]:
            value, size = self._reference(names[0], path)
            return (copy.deepcopy(value) if isinstance(value, (dict, list)) else value), size
        parts: list[str] = []
        size = _NODE_COST + sum(len(literal) for literal in literals)
        for name in names:
            value, part = self._reference(name, path)
            if isinstance(value, (dict, list)):
                raise self._refuse(path, f"puts the section ${{{name}}} into a string; refusing it")
            parts.append(str(value))
            size += part
        self._spend(size, path)
        out = "".join(literal + part for literal, part in zip(literals, [*parts, ""]))
        if "${" in out:
            raise self._refuse(path, "builds a new ${...} out of its parts; refusing it")
        return out, size

    def _reference(self, name: str, path: Where) -> tuple[Any, int]:
        """What ${name} at `path` names, resolved, and its size (spent once per use)."""
        found = _KEY_PATH.fullmatch(name.strip())
        if found is None:
            raise self._refuse(path, f"uses ${{{name}}}; only references to other settings (${{a.b}}, ${{.b}}) are "
                                     "resolved, never resolvers such as oc.env; refusing it")
        dots, keys = found.group(1), [key.strip("[]") for key in _KEY.findall(found.group(2))]
        base: Where = ()
        if dots:
            up = len(dots) - 1
            if up > len(path) - 1:
                raise self._refuse(path, f"refers to ${{{name}}}, above the top of the config; refusing it")
            base = path[: len(path) - 1 - up]
        value, size = self._at((*base, *keys), name, path)
        self._spend(size, path)
        return value, size

    def _at(self, target: list | Where, name: str, path: Where) -> tuple[Any, int]:
        node: Any = self.root
        walked: Where = ()
        for key in target:
            if isinstance(node, str) and "${" in node:
                node = self._node(node, walked)[0]
            if isinstance(node, dict) and key in node:
                walked = (*walked, key)
            elif isinstance(node, dict) and key.isdigit() and int(key) in node:
                key = int(key)
                walked = (*walked, key)
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                key = int(key)
                walked = (*walked, key)
            else:
                raise UserError.about(self.source, f"model_config.yaml cannot be parsed: {_dotted(path)} refers to "
                                                   f"${{{name}}}, which the config does not have")
            node = node[key]
        return self._node(node, walked)

    def _spend(self, size: int, path: Where) -> None:
        self.spent += size
        if self.spent > MAX_EXPANDED:
            raise self._refuse(path, f"and the other ${{...}} references expand the config past {MAX_EXPANDED} "
                                     "bytes (an interpolation bomb?); refusing it")
