"""Located problems from a PyYAML syntax error, the opening mark first.

PyYAML's ``MarkedYAMLError`` carries two marks: ``context_mark`` (where the
construct being parsed began: a ``[``, a ``{``, a quote) and ``problem_mark``
(where parsing failed, often the end of the file).  For an unclosed bracket or
quote the useful place is the first one, so it is reported first::

    plan.yaml:5:11: invalid YAML: flow sequence ('[') opened here is never closed
    plan.yaml:6:1: invalid YAML: expected ',' or ']', but got '<stream end>'

Every YAML reader of scmt (plans, the lab file) goes through :func:`yaml_problems`.
"""

from __future__ import annotations

from typing import Any

from scmt_cli.errors import Problem

_OPENERS = {
    "while parsing a flow sequence": "flow sequence ('[')",
    "while parsing a flow mapping": "flow mapping ('{')",
    "while scanning a quoted scalar": "quoted string",
    "while parsing a block mapping": "block mapping",
    "while parsing a block collection": "block sequence",
    "while scanning a simple key": "key",
    "while scanning a block scalar": "block scalar",
}
_AT_END = ("<stream end>", "end of stream", "stream end")


def _where(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


def yaml_problems(err: Any, file: str, prefix: str = "invalid YAML") -> list[Problem]:
    """One or two Problems for ``err`` (a ``yaml.MarkedYAMLError``): the opening mark, then the failure."""
    problem_at = _where(err.problem_mark)
    what = err.problem or err.context or "not YAML"
    context = (err.context or "").strip()
    if err.context_mark is None or not context or _where(err.context_mark) == problem_at:
        return [Problem(file, f"{prefix}: {what}", "", *problem_at)]
    opener = _OPENERS.get(context, context.removeprefix("while ").removeprefix("parsing ").removeprefix("scanning "))
    unclosed = any(token in (err.problem or "") for token in _AT_END)
    first = f"{opener} opened here is never closed" if unclosed else f"{opener} started here"
    return [Problem(file, f"{prefix}: {first}", "", *_where(err.context_mark)),
            Problem(file, f"{prefix}: {what}", "", *problem_at)]
