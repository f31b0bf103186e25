"""Recommend a migration method per VM, following the seed's summary table.

The seed (chapter 7) maps downtime tolerance to methods:

* not sensitive to the migration process / downtime -> managed migration;
* downtime within 5-10 minutes -> agentless point-to-point (or agent-based
  point-to-point when snapshots' performance impact is not acceptable);
* downtime around 1 minute -> agent-based hot backup (CDP);
* cluster applications -> a group whose nodes fail over together.

We pick the band from the tolerance (none or above 10 minutes: managed; above
2 minutes: agentless; else hot backup), then walk towards faster methods
(managed -> agentless -> agent -> hot-backup) past every method that is
blocked for this VM or whose lab switch time (the seed's lab table, per OS)
exceeds the tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scmt_cli.domain.assess.model import ALL_METHODS, Verdict
from scmt_cli.domain.compat import lab_switch_seconds

TEN_MINUTES = 600.0
TWO_MINUTES = 120.0


@dataclass(frozen=True)
class Recommendation:
    method: str
    reason: str


def lab_switch(os_kind: str | None, method: str) -> int:
    """The seed's lab switch seconds for ``method``; the slower OS when the OS is unknown."""
    table = lab_switch_seconds()
    if os_kind in table:
        return table[os_kind][method]
    return max(t[method] for t in table.values())


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def recommend(
    verdicts: Mapping[str, Verdict],
    os_kind: str | None,
    tolerance_seconds: float | None = None,
    group: str | None = None,
) -> Recommendation:
    """The method for one VM given its verdict under each method (see module doc)."""
    if tolerance_seconds is None or tolerance_seconds > TEN_MINUTES:
        start, why = 0, (
            "downtime not constrained: managed migration is fully automatic"
            if tolerance_seconds is None
            else f"downtime tolerance {_fmt(tolerance_seconds)} leaves room for managed migration"
        )
    elif tolerance_seconds > TWO_MINUTES:
        start, why = 1, f"downtime tolerance {_fmt(tolerance_seconds)}: point-to-point migration (5-10 minutes)"
    else:
        start, why = 3, f"downtime tolerance {_fmt(tolerance_seconds)}: hot backup switches in about a minute"
    skipped: list[str] = []
    chosen: str | None = None
    for method in ALL_METHODS[start:]:
        if verdicts.get(method) == "blocked":
            skipped.append(f"{method} is blocked")
            continue
        lab = lab_switch(os_kind, method)
        if tolerance_seconds is not None and lab > tolerance_seconds:
            skipped.append(f"{method} switches in {_fmt(lab)} in the seed's lab")
            continue
        chosen = method
        break
    if chosen is None:
        open_methods = [m for m in ALL_METHODS if verdicts.get(m) != "blocked"]
        if open_methods:
            chosen = min(open_methods, key=lambda m: lab_switch(os_kind, m))
            why = (f"no method meets the downtime tolerance; {chosen} has the shortest lab switch "
                   f"({_fmt(lab_switch(os_kind, chosen))})")
        else:
            chosen = ALL_METHODS[start]
            why = "every method is blocked: fix the blockers first"
        skipped = []
    reason = why
    if skipped:
        reason += f"; so {chosen}, because " + ", ".join(skipped)
    if group:
        reason += f"; cluster group {group!r}: its VMs fail over together"
    return Recommendation(chosen, reason)
