"""Read a YAML document into plain Python data while remembering where every node was.

Contract:

* :func:`load_located` returns a :class:`Located`: ``data`` (dicts, lists, str,
  int, float, bool, None) plus the 1-based line/column of every value and every
  mapping key, addressed by its path (a tuple of ``str`` keys and ``int`` indexes).
* Scalars are resolved with the YAML 1.2 *core* schema, not YAML 1.1: only
  ``true``/``false`` are booleans (``on``, ``yes``, ``NO`` stay strings), there are
  no sexagesimal numbers (``22:30`` is a string) and no implicit timestamps (an
  ISO-8601 date stays the string the user wrote).
* Duplicate keys, non-scalar keys, unknown tags and runaway alias expansion are
  reported as :class:`~scmt_cli.errors.Problem` objects; a syntax error stops the
  load with one problem at the offending line/column.  Nothing here raises
  anything but :class:`YamlLoadError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from scmt_cli.errors import Problem

PathT = tuple[str | int, ...]

#: Refuse documents whose alias expansion would produce more nodes than this.
MAX_NODES = 200_000
#: Refuse nesting deeper than this (a plan is at most ~8 levels deep).
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _CoreResolver(yaml.resolver.Resolver):
    """YAML 1.2 core-schema implicit typing (see module docstring)."""


_CoreResolver.yaml_implicit_resolvers = {}
for _tag, _regex, _first in (
    ("bool", _BOOL, "tTfF"),
    ("null", _NULL, ["~", "n", "N", ""]),
    ("int", _INT, "-+0123456789"),
    ("float", _FLOAT, "-+.0123456789"),
):
    _CoreResolver.add_implicit_resolver(_TAG + _tag, _regex, list(_first))


class _Composer(
    yaml.reader.Reader,
    yaml.scanner.Scanner,
    yaml.parser.Parser,
    yaml.composer.Composer,
    _CoreResolver,
):
    """A node-only loader: it composes, it never constructs Python objects."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _CoreResolver.__init__(self)


class YamlLoadError(Exception):
    """The document could not be read at all; ``problems`` says why and where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.format() for p in problems))
        self.problems = problems


@dataclass
class Located:
    """Plain data plus source positions (1-based ``(line, column)``)."""

    file: str
    data: Any
    value_marks: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def mark(self, path: PathT, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path``'s key (``key=True``) or value, else of its nearest ancestor."""
        p = tuple(path)
        if key and p in self.key_marks:
            return self.key_marks[p]
        while p:
            if p in self.value_marks:
                return self.value_marks[p]
            if p in self.key_marks:
                return self.key_marks[p]
            p = p[:-1]
        return self.value_marks.get((), (0, 0))

    def problem(self, path: PathT, message: str, *, key: bool = False) -> Problem:
        """A :class:`Problem` located at ``path``."""
        line, col = self.mark(path, key=key)
        return Problem(self.file, message, format_path(path), line, col)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(path: PathT) -> str:
    """``("vms", 3, "disks", 0, "size")`` -> ``vms[3].disks[0].size``.

    Keys that are not plain identifiers are quoted: ``target.networks["VM Network"]``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            escaped = part.replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{escaped}"]'
    return out


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, located: Located) -> None:
        self.loc = located
        self.count = 0

    def build(self, node: yaml.Node, path: PathT, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig()
        if depth > MAX_DEPTH:
            raise _TooDeep(node)
        self.loc.value_marks.setdefault(path, _pos(node))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        return None  # pragma: no cover - yaml has no other node kinds

    def scalar(self, node: yaml.ScalarNode, path: PathT) -> Any:
        tag, text = node.tag, node.value
        try:
            if tag == _TAG + "str":
                return text
            if tag == _TAG + "null":
                return None
            if tag == _TAG + "bool":
                return text.lower() == "true"
            if tag == _TAG + "int":
                if text.startswith("0o"):
                    return int(text[2:], 8)
                if text.startswith("0x"):
                    return int(text[2:], 16)
                return int(text)
            if tag == _TAG + "float":
                low = text.lower()
                if low.endswith(".inf"):
                    return float("-inf") if low.startswith("-") else float("inf")
                if low == ".nan":
                    return float("nan")
                return float(text)
        except ValueError:
            self.loc.problems.append(self.loc.problem(path, f"cannot read {text!r} as {tag.removeprefix(_TAG)}"))
            return text
        self.loc.problems.append(
            self.loc.problem(path, f"unsupported YAML tag {tag!r}; plans use plain scalars, lists and mappings")
        )
        return text

    def mapping(self, node: yaml.MappingNode, path: PathT, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                self.loc.problems.append(
                    Problem(self.loc.file, "YAML merge keys ('<<') are not supported in plans", format_path(path),
                            *_pos(key_node))
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.loc.problems.append(
                    Problem(self.loc.file, "mapping keys must be plain scalars (text or numbers)", format_path(path),
                            *_pos(key_node))
                )
                continue
            key = key_node.value
            if key in first_seen:
                line, _ = first_seen[key]
                self.loc.problems.append(
                    Problem(
                        self.loc.file,
                        f"duplicate key {key!r} (first defined on line {line}); each key may appear once",
                        format_path(path + (key,)),
                        *_pos(key_node),
                    )
                )
                continue
            first_seen[key] = _pos(key_node)
            self.loc.key_marks[path + (key,)] = _pos(key_node)
            out[key] = self.build(value_node, path + (key,), depth + 1)
        return out


class _TooBig(Exception):
    pass


class _TooDeep(Exception):
    def __init__(self, node: yaml.Node) -> None:
        super().__init__("too deep")
        self.node = node


def load_located(text: str, file: str) -> Located:
    """Parse one YAML document from ``text``; ``file`` is used in problem locations.

    Raises :class:`YamlLoadError` when the text is not YAML at all (syntax
    error, several documents, alias bomb).  Non-fatal problems (duplicate keys,
    odd tags) are collected in ``Located.problems``; the document is still
    returned so later checks can report their problems too.
    """
    loader: _Composer | None = None
    try:
        loader = _Composer(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        what = err.problem or err.context or "invalid YAML"
        if err.context and err.problem and "expected a single document" in err.context:
            what = "several YAML documents in one file; a plan file holds exactly one"
        raise YamlLoadError([Problem(file, f"invalid YAML: {what}", "", line, col)]) from None
    except yaml.YAMLError as err:  # ReaderError: control characters, bad encoding
        line = col = 0
        position = getattr(err, "position", None)
        if isinstance(position, int):
            line = text.count("\n", 0, position) + 1
            col = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = getattr(err, "reason", None) or "unreadable characters"
        raise YamlLoadError([Problem(file, f"invalid YAML: {reason}", "", line, col)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    located = Located(file=file, data=None)
    if node is None:
        return located
    builder = _Builder(located)
    try:
        located.data = builder.build(node, (), 0)
    except _TooBig:
        raise YamlLoadError(
            [Problem(file, f"document expands to more than {MAX_NODES} nodes (alias expansion?)", "", 1, 1)]
        ) from None
    except _TooDeep as deep:
        line, col = _pos(deep.node)
        raise YamlLoadError([Problem(file, f"nesting deeper than {MAX_DEPTH} levels", "", line, col)]) from None
    return located
