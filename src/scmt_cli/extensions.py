"""Extensions found through entry points (group ``scmt_cli.hooks``).

The product calls an extension point by name; whatever the installed
distributions declare for it answers first, and a ``None`` answer passes to
the next.  This is how the embedded lab (:mod:`scmt_cli.lab.hooks`) serves the
fake vCenter and lab inventories without the product importing it.  Entry
point names are ``<point>.<provider>``; known points:

* ``open_vcenter(settings, reporter) -> VCenter | None``
* ``read_inventory(path) -> Inventory | None``
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

GROUP = "scmt_cli.hooks"


@functools.cache
def hooks(point: str) -> tuple[Callable[..., Any], ...]:
    """The callables registered for extension point ``point``, in name order."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name.split(".", 1)[0] == point]
    return tuple(ep.load() for ep in sorted(found, key=lambda ep: ep.name))


def first(point: str, *args: Any) -> Any:
    """The first non-None answer of the hooks of ``point``, or None."""
    for hook in hooks(point):
        answer = hook(*args)
        if answer is not None:
            return answer
    return None
