"""JSON-Schema validation of a located plan, with messages people can act on.

Contract: :func:`schema_problems` returns one :class:`~scmt_cli.errors.Problem`
per violation, located at the YAML line/column of the offending key or value,
worded as "what was expected" (never the raw jsonschema message), and never
echoing a value found under a secret-looking key.  :func:`secret_problems`
rejects clear-text secrets.  Both return problems; neither raises.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from scmt_cli.domain.plan.yamlsource import Located, PathT
from scmt_cli.errors import Problem

_SECRET_KEY = re.compile(
    r"(?i)(passw|passphrase|^pass$|_pass$|^pwd$|_pwd$|secret|token|api[_-]?key|apikey|private[_-]?key|credential)"
)
_SECRETISH = re.compile(r"(?i)(pass|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|credential)")
#: Mappings whose keys are user data (network and datastore names), not field names.
_DATA_MAPS = {("target", "networks"), ("target", "storage")}
_REFERENCE_SUFFIXES = ("_env", "_file")
_URL_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:[^/@\s]*@")
_ARGV_SECRET = re.compile(r"(?i)^--?[a-z0-9_-]*(password|passwd|secret|token|api[_-]?key)=.+")


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The plan JSON Schema (draft 2020-12), as shipped in this package."""
    text = resources.files("scmt_cli.domain.plan").joinpath("schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema())


def is_secret_key(key: str) -> bool:
    """True for keys that would hold a secret in clear text (``password``, ``api_key``)."""
    return bool(_SECRET_KEY.search(key)) and not key.endswith(_REFERENCE_SUFFIXES)


def _secretish(path: PathT) -> bool:
    """True when a value at ``path`` must never be echoed in a message."""
    return any(isinstance(p, str) and _SECRETISH.search(p) for p in path)


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target: dict[str, Any] = schema()["$defs"][ref.removeprefix("#/$defs/")]
        return target
    return node


def _known_keys(subschema: dict[str, Any]) -> list[str]:
    """Property names a (possibly ``$ref``-extended) object schema accepts."""
    keys = list(subschema.get("properties", {}))
    base = _resolve(subschema) if "$ref" in subschema else None
    if base is not None and base is not subschema:
        keys += [k for k in _known_keys(base) if k not in keys]
    return keys


def suggest(word: str, choices: list[str]) -> str | None:
    """The closest of ``choices`` to ``word`` when it is close enough, else None."""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.7)
    return lowered[match[0]] if match else None


def describe(value: Any, path: PathT) -> str:
    """A short description of a value for "got ..." (never the value of a secret)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        digits = str(value)
        if len(digits) > 24:  # a 400-digit number is not echoed whole
            digits = f"{digits[:12]}...({len(digits)} digits)"
        return f"integer {digits}" if not _secretish(path) else "an integer"
    if isinstance(value, float):
        return f"number {value}" if not _secretish(path) else "a number"
    if isinstance(value, str):
        if _secretish(path):
            return "a string"
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _expected(error: Any) -> str | None:
    sub = error.schema if isinstance(error.schema, dict) else {}
    text = sub.get("x-expected")
    return text if isinstance(text, str) else None


def _messages(error: Any, located: Located) -> Iterator[tuple[PathT, str, bool]]:
    """(path, message, point-at-key) for one jsonschema error."""
    path: PathT = tuple(error.absolute_path)
    inst = error.instance
    kind = error.validator
    value = error.validator_value
    got = describe(inst, path)
    if kind == "type":
        types = value if isinstance(value, list) else [value]
        words = " or ".join(str(_TYPE_WORDS.get(t, t)) for t in types)
        yield path, f"expected {_expected(error) or words}, got {got}", False
    elif kind == "enum":
        choices = [str(v) for v in value]
        msg = f"expected one of {', '.join(choices)}; got {got}"
        near = suggest(inst, choices) if isinstance(inst, str) and not _secretish(path) else None
        if near:
            msg += f" (did you mean {near!r}?)"
        yield path, msg, False
    elif kind == "const":
        yield path, f"expected {_expected(error) or json.dumps(value)}, got {got}", False
    elif kind == "required":
        for key in value:
            if isinstance(inst, dict) and key not in inst:
                yield path, f"missing required key {key!r}", False
    elif kind in ("additionalProperties", "unevaluatedProperties"):
        known = _known_keys(error.schema) if isinstance(error.schema, dict) else []
        extras = [k for k in inst if k not in known] if isinstance(inst, dict) else []
        for key in extras:
            msg = f"unknown key {key!r}"
            near = suggest(key, known)
            if near:
                msg += f"; did you mean {near!r}?"
            elif known:
                msg += f"; expected one of: {', '.join(known)}"
            yield path + (key,), msg, True
    elif kind == "pattern" or kind == "format":
        yield path, f"expected {_expected(error) or 'a value in the documented format'}, got {got}", False
    elif kind == "minLength":
        yield path, "must not be empty" if value == 1 else f"must be at least {value} characters", False
    elif kind == "maxLength":
        yield path, f"too long: at most {value} characters", False
    elif kind == "minimum":
        yield path, f"must be at least {value}, got {got}", False
    elif kind == "maximum":
        yield path, f"must be at most {value}, got {got}", False
    elif kind == "minItems":
        yield path, f"must list at least {value} item{'s' if value != 1 else ''}", False
    else:
        yield path, f"not valid here ({kind}): expected {_expected(error) or 'see scmt plan schema'}", False


def schema_problems(located: Located, *, skip: set[PathT] | None = None) -> list[Problem]:
    """Every schema violation of ``located.data``, in document order.

    Problems at or below a path in ``skip`` (already reported, e.g. a clear-text
    secret) are left out so that a value is never reported, or echoed, twice.
    """
    skip = skip or set()
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for error in _validator().iter_errors(located.data):
        for path, message, at_key in _messages(error, located):
            if any(path[: len(s)] == s for s in skip):
                continue
            problem = located.problem(path, message, key=at_key)
            ident = (problem.path, problem.message)
            if ident not in seen:
                seen.add(ident)
                out.append(problem)
    return sorted(out, key=lambda p: (p.line, p.column, p.path))


def secret_problems(located: Located) -> tuple[list[Problem], set[PathT]]:
    """Clear-text secrets anywhere in the document, and the paths they sit at."""
    problems: list[Problem] = []
    paths: set[PathT] = set()

    def walk(node: Any, path: PathT) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                sub = path + (key,)
                if path not in _DATA_MAPS and is_secret_key(key):
                    base = "password" if re.search(r"(?i)pass|pwd", key) else key.lower()
                    base = "token" if "token" in base else base
                    problems.append(
                        located.problem(
                            sub,
                            f"clear-text secret in {key!r} is not allowed in a plan; use {base}_env (the name of an "
                            f"environment variable) or {base}_file (a file holding it) instead",
                            key=True,
                        )
                    )
                    paths.add(sub)
                    continue
                walk(value, sub)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, path + (i,))
        elif isinstance(node, str):
            if _URL_PASSWORD.search(node):
                problems.append(
                    located.problem(
                        path,
                        "URL carries a password (user:password@); put the user in 'username' and the password in "
                        "password_env or password_file",
                    )
                )
                paths.add(path)
            elif _ARGV_SECRET.match(node):
                problems.append(
                    located.problem(
                        path,
                        "secret passed as a command-line argument; pass it to the hook through an environment "
                        "variable or a file instead",
                    )
                )
                paths.add(path)

    walk(located.data, ())
    return problems, paths
