"""Hostile plans (issue 15.5): deep nesting, 400-digit numbers, control characters, secret files that are
devices.  Each is a PlanError naming file, line and field (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scmt_cli.domain.plan.yamlsource import MAX_DEPTH, format_path
from scmt_cli.errors import PlanError
from tests.plan.conftest import base, dump, load, run_cli

BIG = int("9" * 400)


def _full() -> dict[str, Any]:
    """A valid plan with every numeric (or unit) field set."""
    doc = base()
    doc["target"] = {"type": "dir", "path": "/var/lib/scmt", "networks": {"VM Network": "default"},
                     "v2v_timeout": "1h", "v2v_stall_timeout": "10m"}
    doc["defaults"].update(sync_interval="30m", bandwidth="300Mbit", downtime_tolerance="10m", concurrency=2,
                           concurrency_per_esxi_host=2, concurrency_per_datastore=2,
                           hooks={"sync": {"pre": [["true"]], "timeout": "5m"}})
    doc["vms"][0].update(cpus=4, memory="8GiB", sync_interval="1h", bandwidth="1Gbit", downtime_tolerance="5m",
                         disks=[{"key": 2000, "size": "100GiB"}])
    return doc


NUMERIC_FIELDS: list[tuple[str | int, ...]] = [
    ("version",),
    ("target", "v2v_timeout"), ("target", "v2v_stall_timeout"),
    ("defaults", "sync_interval"), ("defaults", "bandwidth"), ("defaults", "downtime_tolerance"),
    ("defaults", "concurrency"), ("defaults", "concurrency_per_esxi_host"), ("defaults", "concurrency_per_datastore"),
    ("defaults", "hooks", "sync", "timeout"),
    ("vms", 0, "cpus"), ("vms", 0, "memory"), ("vms", 0, "sync_interval"), ("vms", 0, "bandwidth"),
    ("vms", 0, "downtime_tolerance"), ("vms", 0, "disks", 0, "key"), ("vms", 0, "disks", 0, "size"),
]


def _set(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def test_the_full_plan_is_valid() -> None:
    load(_full())


@pytest.mark.parametrize("path", NUMERIC_FIELDS, ids=[format_path(p) for p in NUMERIC_FIELDS])
@pytest.mark.parametrize("value", [BIG, str(BIG), -BIG], ids=["int", "text", "negative"])
def test_a_400_digit_number_in_any_numeric_field_is_a_located_plan_error(path: tuple[str | int, ...],
                                                                         value: Any) -> None:
    doc = _full()
    _set(doc, path, value)
    with pytest.raises(PlanError) as info:
        load(doc)
    assert info.value.exit_code == 2
    here = [p for p in info.value.problems if p.path == format_path(path)]
    assert here and all(p.file == "plan.yaml" and p.line > 0 for p in here), info.value.problems
    assert all(len(p.message) < 300 for p in info.value.problems)  # the digits are not echoed whole


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused_before_composing(depth: int, style: str) -> None:
    if style == "flow":
        text = "version: 1\nvms: " + "[" * depth + "]" * depth + "\n"
    else:
        text = "version: 1\nx:\n" + "".join(" " * i + "a:\n" for i in range(1, depth))
    with pytest.raises(PlanError) as info:
        load(text)
    [problem] = info.value.problems
    assert problem.message == f"nesting deeper than {MAX_DEPTH} levels" and problem.line > 0


def test_control_characters_are_escaped_in_text_and_json(tmp_path: Path) -> None:
    doc = base()
    doc["defaults"]["\x1b]0;pwned\x07\x1b[31mevil"] = 1
    doc["vms"][0]["name"] = "web\x1b[2J01"
    plan = tmp_path / "esc.yaml"
    plan.write_text(dump(doc), encoding="utf-8")
    code, out, err = run_cli("plan", "validate", str(plan))
    assert code == 2
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert '\\x1b]0;pwned\\x07\\x1b[31mevil' in err
    code, out, err = run_cli("--json", "--log-json", "plan", "validate", str(plan))
    assert code == 2
    for text in (out, err):
        assert "\\u001b" not in text and "\x1b" not in text  # escaped before JSON encoding, not by it
    assert "\\\\x1b]0;pwned" in out
    json.loads(out)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo", "dir", "big"])
@pytest.mark.parametrize("field", [("source", "password_file"), ("vms", 0, "agent", "token_file")])
def test_a_secret_file_that_cannot_be_one_is_a_located_plan_error(tmp_path: Path, special: str,
                                                                  field: tuple[str | int, ...]) -> None:
    if special == "fifo":
        os.mkfifo(tmp_path / "fifo")
    elif special == "dir":
        (tmp_path / "dir").mkdir()
    elif special == "big":
        (tmp_path / "big").write_bytes(b"x" * (64 * 1024 + 1))
    doc = base()
    if field[0] == "source":
        del doc["source"]["password_env"]
    else:
        doc["vms"][0]["method"] = "agent"
        doc["vms"][0]["agent"] = {"address": "web01:20000", "plaintext": True}
    _set(doc, field, special)
    with pytest.raises(PlanError) as info:
        load(doc, path=tmp_path / "plan.yaml")
    [problem] = [p for p in info.value.problems if p.path == format_path(field)]
    assert problem.line > 0 and special in problem.message
    assert "regular file" in problem.message or "64 KiB" in problem.message


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(NUMERIC_FIELDS),
       value=st.one_of(st.integers(min_value=10**18, max_value=10**500), st.integers(max_value=-1),
                       st.from_regex(r"\A[0-9]{30,420}(\.[0-9]{0,40})?(ms|s|m|h|d|GiB|TB|Mbit|MB/s)?\Z"),
                       st.text(alphabet="\x00\x01\x07\x08\x1b\x7f\x9b[];0123456789mJ", max_size=30)))
def test_hostile_values_in_numeric_fields_give_plan_errors_only(path: tuple[str | int, ...], value: Any) -> None:
    doc = _full()
    _set(doc, path, value)
    problems = []
    try:
        load(doc)
    except PlanError as err:
        problems = list(err.problems) or [None]
    assert all(p is not None and p.file == "plan.yaml" and p.line > 0 for p in problems)
