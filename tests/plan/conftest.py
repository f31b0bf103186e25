"""Shared helpers for the plan tests: a valid base plan, a fixed clock, the CLI in-process."""

from __future__ import annotations

import copy
import datetime as dt
import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from scmt_cli.domain.plan import LoadedPlan, parse_plan
from scmt_cli.errors import PlanError, Problem

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)

BASE: dict[str, Any] = {
    "version": 1,
    "source": {
        "url": "https://vc.example.com/sdk",
        "username": "svc@vsphere.local",
        "password_env": "VC_PASSWORD",
    },
    "target": {
        "type": "libvirt",
        "uri": "qemu:///system",
        "networks": {"VM Network": "default", "App-VLAN20": "vlan20"},
        "storage": {"ds1": "pool1"},
    },
    "defaults": {"method": "agentless"},
    "vms": [
        {"name": "web01"},
        {"name": "db01"},
    ],
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def load(doc: dict[str, Any] | str, **kw: Any) -> LoadedPlan:
    """Parse a plan (dict or text) with the fixed clock."""
    text = doc if isinstance(doc, str) else dump(doc)
    kw.setdefault("now", NOW)
    return parse_plan(text, file="plan.yaml", **kw)


def problems(doc: dict[str, Any] | str, **kw: Any) -> list[Problem]:
    """The problems of an invalid plan (fails the test when the plan is valid)."""
    with pytest.raises(PlanError) as info:
        load(doc, **kw)
    assert info.value.exit_code == 2
    return list(info.value.problems)


def messages(doc: dict[str, Any] | str, **kw: Any) -> list[str]:
    return [p.format() for p in problems(doc, **kw)]


def variant(mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = base()
    mutate(doc)
    return doc


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``scmt`` in-process; return (exit code, stdout, stderr)."""
    from scmt_cli.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()
