"""A small located reader for YAML documents (used by the lab file loader).

The document is composed into PyYAML nodes (no Python objects are built by
PyYAML), and values are pulled out field by field, so every problem names the
file, the 1-based line and column, and the field path (``vms[2].disks[0].size``).
Problems raise :class:`~scmt_cli.errors.InputError` (exit 3).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import yaml

from scmt_cli.domain.plan.yamlsource import DepthLimited
from scmt_cli.domain.units import parse_size
from scmt_cli.domain.yamlerrors import yaml_problems
from scmt_cli.errors import InputError, MissingFileError, Problem


class _SafeLoader(DepthLimited, yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested too deep (instead of a RecursionError)."""


class Reader:
    """Reads typed values out of composed YAML nodes, raising located errors."""

    def __init__(self, file: str) -> None:
        self.file = file

    # -- loading ---------------------------------------------------------
    def compose(self, path: Path) -> yaml.Node:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MissingFileError(
                f"{self.file}: no such lab file",
                hint="the example lab is examples/lab.yaml; 'python -m scmt_cli.lab --help' serves one") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.file}: cannot read: {exc}") from None
        try:
            node = yaml.compose(text, Loader=_SafeLoader)
        except yaml.MarkedYAMLError as exc:
            problems = yaml_problems(exc, self.file, prefix="not valid YAML")
            raise InputError(problems[0].format(), problems=problems) from None
        except yaml.YAMLError as exc:
            raise InputError(f"{self.file}: not valid YAML: {exc}") from None
        if node is None:
            self.fail(None, "", "the file is empty")
        return node

    # -- errors ----------------------------------------------------------
    def fail(self, node: yaml.Node | None, path: str, message: str) -> NoReturn:
        line = node.start_mark.line + 1 if node is not None else 0
        col = node.start_mark.column + 1 if node is not None else 0
        problem = Problem(self.file, message, path=path, line=line, column=col)
        raise InputError(problem.format(), problems=[problem])

    # -- containers ------------------------------------------------------
    def mapping(
        self,
        node: yaml.Node,
        path: str,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> dict[str, yaml.Node]:
        """The mapping's values by key; unknown, duplicate or missing keys are errors."""
        allowed = list(allowed)
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping with keys {', '.join(allowed)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.fail(key_node, path, "keys must be plain strings")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(allowed)})"
                self.fail(key_node, where, f"unknown key {key!r}{hint}")
            if key in out:
                self.fail(key_node, where, f"duplicate key {key!r}")
            out[key] = value_node
        for key in required:
            if key not in out:
                self.fail(node, f"{path}.{key}" if path else key, f"missing required key {key!r}")
        return out

    def sequence(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, path, "expected a list")
        return list(node.value)

    # -- scalars ---------------------------------------------------------
    def _scalar(self, node: yaml.Node, path: str, what: str) -> yaml.ScalarNode:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"expected {what}")
        return node

    def string(self, node: yaml.Node, path: str) -> str:
        return str(self._scalar(node, path, "a string").value)

    def optional_string(self, node: yaml.Node | None, path: str) -> str | None:
        if node is None or self.is_null(node):
            return None
        return self.string(node, path)

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def integer(self, node: yaml.Node, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
        s = self._scalar(node, path, "an integer")
        text = str(s.value).replace("_", "")
        try:
            value = int(text, 0)
        except ValueError:
            self.fail(node, path, f"expected an integer, got {s.value!r}")
        if minimum is not None and value < minimum:
            self.fail(node, path, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(node, path, f"must be at most {maximum}, got {value}")
        return value

    def boolean(self, node: yaml.Node, path: str) -> bool:
        s = self._scalar(node, path, "true or false")
        text = str(s.value).lower()
        if s.tag == "tag:yaml.org,2002:bool" or text in ("true", "false"):
            return text in ("true", "yes", "on")
        self.fail(node, path, f"expected true or false, got {s.value!r}")

    def size(self, node: yaml.Node, path: str, minimum: int = 0) -> int:
        """A byte count: an integer or a string like ``"64 MiB"``."""
        s = self._scalar(node, path, 'a size (bytes, or a string like "64 MiB")')
        try:
            value = parse_size(str(s.value).replace("_", ""))
        except ValueError as exc:
            self.fail(node, path, str(exc))
        if value < minimum:
            self.fail(node, path, f"must be at least {minimum} bytes, got {value}")
        return value

    def choice(self, node: yaml.Node, path: str, options: Iterable[str]) -> str:
        options = list(options)
        value = self.string(node, path)
        if value not in options:
            close = difflib.get_close_matches(value, options, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(node, path, f"expected one of {', '.join(options)}, got {value!r}{hint}")
        return value

    def string_list(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        return tuple(self.string(item, f"{path}[{i}]") for i, item in enumerate(self.sequence(node, path)))
