"""The JSON Schemas of the ``--json`` documents: one per command, one for errors.

The files live in ``scmt_cli/cli/schemas/`` (package data): ``<command>.json``
with spaces written as ``-`` (``plan-validate.json``), ``exit_error.json`` for
the error document, and ``common.json`` for definitions several documents
share.  A command's file refers to those as ``common.json#/$defs/NAME``;
:func:`document_schema` returns the schema with them copied in, so that what
``scmt schema COMMAND`` prints stands alone (draft 2020-12).

Every document has ``schema_version`` (the ``const`` of that property in its
schema: raise it when the document changes incompatibly), ``exit_code`` and
``warnings``.  ``plan schema`` and ``schema`` print JSON Schemas themselves;
their schema is the draft 2020-12 metaschema.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from importlib import resources
from typing import Any

from scmt_cli.errors import UsageError

_COMMON = "common.json"
_REF = _COMMON + "#/$defs/"

#: Every document ``scmt schema`` knows: the commands, then the error document.
DOCUMENTS: tuple[str, ...] = (
    "assess", "plan init", "plan validate", "plan show", "plan schema", "plan estimate", "sync", "failover", "boot",
    "rollback", "migrate", "finalize", "status", "copy", "agent serve", "agent restore", "demo", "version", "help",
    "schema", "preview", "events", "status overview", "exit_error",
)


#: Documents that are JSON Schemas themselves: no schema_version, exit_code or warnings.
RAW: tuple[str, ...] = ("plan schema", "schema")


def file_name(name: str) -> str:
    return name.replace(" ", "-") + ".json"


@functools.cache
def _raw(file: str) -> dict[str, Any]:
    text = resources.files("scmt_cli.cli").joinpath("schemas", file).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            found.add(ref[len(_REF):])
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


def _local(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: ("#/$defs/" + v[len(_REF):] if k == "$ref" and isinstance(v, str) and v.startswith(_REF)
                    else _local(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_local(v) for v in node]
    return node


def resolve(name: str) -> str:
    """The document name for ``name`` (``plan-validate``, ``plan validate``); UsageError when unknown."""
    wanted = " ".join(name.replace("-", " ").split()) if name != "exit_error" else name
    if wanted in DOCUMENTS:
        return wanted
    near = difflib.get_close_matches(wanted, DOCUMENTS, n=1)
    raise UsageError(f"no JSON document {name!r}" + (f"; did you mean {near[0]!r}?" if near else ""),
                     hint="'scmt schema' lists the documents")


@functools.cache
def _bundled(name: str) -> dict[str, Any]:
    schema = copy.deepcopy(_raw(file_name(name)))
    common = _raw(_COMMON)["$defs"]
    needed: set[str] = set()
    _refs(schema, needed)
    todo = list(needed)
    while todo:  # definitions that refer to other definitions
        more: set[str] = set()
        _refs(common[todo.pop()], more)
        for m in more - needed:
            needed.add(m)
            todo.append(m)
    if needed:
        schema.setdefault("$defs", {}).update({k: common[k] for k in sorted(needed)})
    out: dict[str, Any] = _local(schema)
    return out


def document_schema(name: str) -> dict[str, Any]:
    """The stand-alone JSON Schema of document ``name`` (a copy: callers may change it)."""
    return copy.deepcopy(_bundled(resolve(name)))


def schema_version(name: str) -> int:
    """The ``schema_version`` documents ``name`` carry (1 for a name without a schema file)."""
    if name not in DOCUMENTS:
        return 1
    const = _raw(file_name(name)).get("properties", {}).get("schema_version", {}).get("const", 1)
    return int(const)


def describe(name: str) -> str:
    """The one-line ``description`` of document ``name``."""
    return str(_raw(file_name(name)).get("description", "")).split("\n")[0]
