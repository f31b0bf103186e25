"""The run's warning list stays bounded: a long-running agent warns once per failed connection, each from
another address; past MAX_WARNINGS they are still printed, and counted in one last entry."""

from __future__ import annotations

from scmt_cli.cli.context import MAX_WARNINGS, _CollectingReporter
from scmt_cli.events import RecordingReporter


def test_warnings_past_the_cap_are_printed_and_counted_not_kept() -> None:
    inner = RecordingReporter()
    rep = _CollectingReporter(inner)
    for i in range(MAX_WARNINGS + 50):
        rep.log("warning", f"authentication failed for 10.0.0.{i % 250}:{40000 + i}")
    rep.log("warning", "authentication failed for 10.0.0.0:40000")  # the same text again: once
    kept = rep.warnings
    assert len(kept) == MAX_WARNINGS + 1 and kept[-1] == "... and 50 more warning(s), printed as they happened"
    assert len(inner.of_type("log")) == MAX_WARNINGS + 50
