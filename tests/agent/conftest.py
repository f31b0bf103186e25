"""Fixtures of the agent tests: the demo lab (fake vCenter in process) and plan helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scmt_cli.lab import demo as demo_lab
from scmt_cli.lab.estate import FakeEstate
from scmt_cli.lab.vcenter import start_estate, stop_estate


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[FakeEstate]:
    lab_file = demo_lab.write_lab(tmp_path / "lab")
    est = start_estate(lab_file, tmp_path / "vcenter")
    try:
        yield est
    finally:
        stop_estate(est)


def lab_plan(tmp_path: Path, estate: FakeEstate, vms: tuple[str, ...], agent_vms: dict[str, str], *,
             address: str = "127.0.0.1:20000", token_file: Path | None = None,
             fingerprint: str | None = None) -> Path:
    """The demo plan for ``vms``; each VM in ``agent_vms`` gets that method and an agent block.

    The token reference is ``token_file`` when given, else ``token_env: SCMT_TEST_AGENT_TOKEN``.
    """
    plan = demo_lab.write_plan(tmp_path / "lab", url=estate.base_url + "/sdk", thumbprint=estate.http.thumbprint,
                               user=estate.lab.user, vms=vms)
    lines = plan.read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    for line in lines:
        out.append(line)
        name = line.removeprefix("  - name: ")
        if line.startswith("  - name: ") and name in agent_vms:
            ref = f"      token_file: {token_file}" if token_file else "      token_env: SCMT_TEST_AGENT_TOKEN"
            pin = f"      fingerprint: {fingerprint}" if fingerprint else "      plaintext: true"
            out += [f"    method: {agent_vms[name]}", "    agent:", f"      address: {address}", ref, pin]
    plan.write_text("\n".join(out) + "\n", encoding="utf-8")
    return plan
