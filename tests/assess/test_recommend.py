"""Method recommendation from downtime tolerance, blockers and groups."""

from __future__ import annotations

from scmt_cli.domain.assess import recommend

OPEN = {"managed": "ready", "agentless": "ready", "agent": "ready", "hot-backup": "ready"}


def test_not_sensitive_is_managed():
    r = recommend(OPEN, "linux", None)
    assert r.method == "managed"
    assert "not constrained" in r.reason


def test_five_to_ten_minutes_is_point_to_point():
    assert recommend(OPEN, "linux", 600).method == "agentless"
    # Windows agentless switched in 5m07s in the seed's lab: 5 minutes needs the agent method
    r = recommend(OPEN, "windows", 300)
    assert r.method == "agent"
    assert "5m07s" in r.reason


def test_about_a_minute_is_hot_backup():
    assert recommend(OPEN, "windows", 90).method == "hot-backup"


def test_blocked_methods_are_skipped():
    verdicts = dict(OPEN, managed="blocked", agentless="blocked")
    r = recommend(verdicts, "linux", None)
    assert r.method == "agent"
    assert "managed is blocked" in r.reason


def test_impossible_tolerance_takes_the_fastest_open_method():
    verdicts = dict(OPEN, **{"hot-backup": "blocked"})
    r = recommend(verdicts, "linux", 30)
    assert r.method == "agentless"  # 2m51s, fastest Linux method left
    assert "no method meets" in r.reason


def test_group_is_named():
    assert "fail over together" in recommend(OPEN, "linux", 600, group="redis").reason
