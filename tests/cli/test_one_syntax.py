"""Issue 16 §2: one syntax for the same thing, on the real CLI (in process, on the embedded lab).

* ``--group`` selects a plan group's members on ``sync``, ``status``, ``finalize`` and ``migrate``,
  as it does on ``failover`` and ``rollback`` (groups fail over together, so they are synced,
  checked and finalized together);
* ``--bandwidth`` on ``sync`` and ``migrate`` overrides the plan's limit for the run (``unlimited``
  too); the default is said in help;
* ``agent restore --vm`` is required and names exactly one VM, and says so, in help and errors;
* ``scmt copy`` speaks binary units and counts data, not holes: the bar's speed column, the bar's
  total (data in the map) and the summary rate (bytes read per second of copying).
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scmt_cli.cli.main import main
from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.vcenter import start_estate, stop_estate

MiB = 1024 * 1024


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        doc: Any = json.loads(out)
    except ValueError:
        doc = out
    return code, doc, err


def _lab(tmp_path: Path, *, managed: tuple[str, ...] = (), bandwidth: str | None = None) -> Iterator[Path]:
    estate = start_estate(demo_lab.write_lab(tmp_path / "lab"), tmp_path / "vcenter")
    try:
        plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk",
                                   thumbprint=estate.http.thumbprint, user=estate.lab.user, bandwidth=bandwidth,
                                   vms=("db01", "web01", "redis-a", "redis-b"))
        text = plan.read_text()
        for vm in managed:
            text = text.replace(f"  - name: {vm}\n", f"  - name: {vm}\n    method: managed\n")
        plan.write_text(text)
        yield plan
    finally:
        stop_estate(estate)


@pytest.fixture
def plan(tmp_path: Path) -> Iterator[Path]:
    yield from _lab(tmp_path)


def _states(capsys: pytest.CaptureFixture[str], state: list[str], plan: Path) -> dict[str, str]:
    code, doc, _ = _run(capsys, *state, "--json", "status", str(plan))
    assert code in (0, 1), doc
    return {v["vm"]: v["state"] for v in doc["vms"]}


def test_group_selects_the_members_on_sync_status_and_finalize(plan: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state", str(tmp_path / "s.db")]
    code, doc, err = _run(capsys, *state, "--json", "sync", str(plan), "--group", "redis")
    assert code == 0, err
    assert [v["vm"] for v in doc["vms"]] == ["redis-a", "redis-b"]
    assert _states(capsys, state, plan) == {"db01": "planned", "web01": "planned", "redis-a": "syncing",
                                            "redis-b": "syncing"}
    code, doc, _ = _run(capsys, *state, "--json", "status", str(plan), "--group", "redis")
    assert code == 0 and [v["vm"] for v in doc["vms"]] == ["redis-a", "redis-b"]
    # finalize of a group that is not cut over: refused whole, nothing changed
    code, doc, _ = _run(capsys, *state, "--json", "finalize", str(plan), "--group", "redis")
    assert code == 42 and doc["type"] == "exit_error"
    assert _run(capsys, *state, "failover", str(plan), "--group", "redis", "--direct")[0] == 0
    code, doc, err = _run(capsys, *state, "--json", "finalize", str(plan), "--group", "redis")
    assert code == 0, err
    assert [v["vm"] for v in doc["vms"]] == ["redis-a", "redis-b"]
    assert _states(capsys, state, plan) == {"db01": "planned", "web01": "planned", "redis-a": "committed",
                                            "redis-b": "committed"}
    # --vm and --group together, and an unknown group: usage errors naming the groups
    code, doc, _ = _run(capsys, *state, "--json", "sync", str(plan), "--group", "redis", "--vm", "db01")
    assert code == 2 and "not both" in doc["message"]
    code, doc, _ = _run(capsys, *state, "--json", "status", str(plan), "--group", "ghost")
    assert code == 2 and "groups: redis" in doc["message"]
    # migrate --group of a group whose members are not managed: refused, as named VMs are
    code, doc, _ = _run(capsys, *state, "--json", "migrate", str(plan), "--group", "redis")
    assert code == 2 and "managed method only" in doc["message"]


def test_migrate_group_migrates_the_groups_managed_members(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    for plan in _lab(tmp_path, managed=("redis-a", "redis-b")):
        state = ["--state", str(tmp_path / "s.db")]
        code, doc, err = _run(capsys, *state, "--json", "migrate", str(plan), "--group", "redis",
                              "--max-passes", "1")
        assert code == 1, err  # the plan warns: a group of managed VMs cannot fail over together
        assert {v["vm"]: (v["state"], v["action"]) for v in doc["vms"]} == {
            "redis-a": ("cut-over", "migrated"), "redis-b": ("cut-over", "migrated")}
        assert _states(capsys, state, plan) == {"db01": "planned", "web01": "planned", "redis-a": "cut-over",
                                                "redis-b": "cut-over"}


def test_bandwidth_overrides_the_plans_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan limits reads to 8 Mbit/s (1 MB/s): a 5 MiB seed takes at least 4 s under it."""
    for plan in _lab(tmp_path, bandwidth="8Mbit"):
        state = ["--state", str(tmp_path / "s.db")]
        t0 = time.monotonic()
        code, doc, err = _run(capsys, *state, "--json", "sync", str(plan), "--vm", "redis-a", "--bandwidth",
                              "unlimited")
        assert code == 0, err
        assert time.monotonic() - t0 < 3.5, "--bandwidth unlimited did not lift the plan's 8 Mbit/s"
        t0 = time.monotonic()
        code, doc, err = _run(capsys, *state, "--json", "sync", str(plan), "--vm", "redis-b", "--bandwidth",
                              "16Mbit")
        assert code == 0, err
        assert doc["vms"][0]["bytes_read"] == 5 * MiB
        assert time.monotonic() - t0 >= 2.0, "16 Mbit/s (2 MB/s) less a 1 MiB burst: at least 2 s for 5 MiB"
        code, doc, _ = _run(capsys, *state, "--json", "sync", str(plan), "--bandwidth", "100")
        assert code == 2 and "below the floor" in doc["message"]


def test_help_says_the_bandwidth_default(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["sync"], ["migrate"]):
        code, out, _ = _run(capsys, *cmd, "--help")
        assert code == 0 and "default: the plan's bandwidth, else unlimited" in " ".join(str(out).split())
    _, out, _ = _run(capsys, "copy", "--help")
    assert "(default: unlimited)" in " ".join(str(out).split())
    _, out, _ = _run(capsys, "agent", "serve", "--help")
    assert "300Mbit (the default)" in " ".join(str(out).split())


def test_agent_restore_takes_exactly_one_vm_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = str(tmp_path / "p.yaml")
    code, doc, _ = _run(capsys, "--json", "agent", "restore", plan)
    assert code == 2 and "exactly one VM" in doc["message"] and "no --vm" in doc["message"]
    code, doc, _ = _run(capsys, "--json", "agent", "restore", plan, "--vm", "a", "--vm", "b")
    assert code == 2 and "exactly one VM" in doc["message"] and "--vm a, --vm b" in doc["message"]
    _, out, _ = _run(capsys, "agent", "restore", "--help")
    assert "required, exactly one" in " ".join(str(out).split())


# -- copy: binary units, data not holes ---------------------------------------------------------------


def _sparse(path: Path, size: int, data: list[tuple[int, int]]) -> None:
    with open(path, "wb") as fh:
        for offset, length in data:
            fh.seek(offset)
            fh.write(os.urandom(length))
        fh.truncate(size)


def test_copy_rate_counts_bytes_read_and_holds_under_the_cap(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """40 MiB of data in a 160 MiB sparse disk at 20 MiB/s: the rate said is the data's, at most the cap
    (plus its 5 MiB burst), never the virtual size over the time (which would be about 4x the cap)."""
    src = tmp_path / "src.img"
    _sparse(src, 160 * MiB, [(i * 16 * MiB, 4 * MiB) for i in range(10)])
    state = ["--state", str(tmp_path / "s.db")]
    code, doc, _ = _run(capsys, *state, "--json", "copy", str(src), str(tmp_path / "dst.img"), "--bandwidth",
                        "20MiB/s")
    assert code == 0
    stats = doc["stats"]
    assert stats["bytes_read"] == 40 * MiB
    rate = doc["throughput_bytes_per_s"]
    assert rate == int(stats["bytes_read"] / stats["copy_seconds"])
    assert rate <= 20 * MiB * 1.25, rate / MiB
    code, out, _ = _run(capsys, *state, "copy", str(src), str(tmp_path / "dst2.img"), "--bandwidth", "20MiB/s")
    line = next(x for x in str(out).splitlines() if x.strip().startswith("time"))
    assert "data read at" in line and "MiB/s" in line and "MB/s" not in line.replace("MiB/s", ""), line


def test_copy_progress_counts_data_not_holes(tmp_path: Path) -> None:
    from scmt_cli.events import RecordingReporter
    from scmt_cli.services.copy import CopyRequest, run_copy
    from scmt_cli.state import StateStore

    src = tmp_path / "src.img"
    _sparse(src, 64 * MiB, [(0, 4 * MiB), (32 * MiB, 8 * MiB)])
    rep = RecordingReporter()
    with StateStore.open(tmp_path / "s.db") as store:
        run_copy(CopyRequest(src.as_uri(), (tmp_path / "dst.img").as_uri()), rep, store)
    bars = [p for p in rep.of_type("progress") if p["task"] == "dst.img"]
    assert bars and all(p["total"] <= 12 * MiB for p in bars), bars[-3:]
    assert bars[-1]["done"] == bars[-1]["total"] == 12 * MiB
    assert [p["done"] for p in bars] == sorted(p["done"] for p in bars)


def test_the_progress_bar_speed_is_binary() -> None:
    from rich.console import Console

    from scmt_cli.cli.context import HumanReporter

    buf = io.StringIO()
    rep = HumanReporter(Console(file=buf, force_terminal=True, width=120, color_system=None), 20, bars=True)
    rep.progress("disk0", 0, 512 * MiB)
    time.sleep(0.3)
    rep.progress("disk0", 100 * MiB, 512 * MiB)
    time.sleep(0.3)
    rep.progress("disk0", 200 * MiB, 512 * MiB)
    rep.close()
    text = buf.getvalue()
    assert "MiB/s" in text and " MB/s" not in text, text[-300:]
