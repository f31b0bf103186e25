"""Network preflight against listening and closed loopback ports."""

from __future__ import annotations

import socket

import pytest

from scmt_cli.events import RecordingReporter
from scmt_cli.services.preflight import PortCheck, probe, required_checks, run_preflight, split_host_port


@pytest.fixture
def listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound once, nothing listens now
    return port


def test_probe_open_and_closed(listening, closed_port):
    assert probe("127.0.0.1", listening, 2.0)[0] == "open"
    assert probe("127.0.0.1", closed_port, 2.0)[0] == "closed"


def test_probe_unresolved():
    assert probe("no-such-host.invalid", 443, 1.0)[0] == "unresolved"


def test_required_checks_for_agentless_use_real_addresses(listening):
    checks, missing = required_checks("agentless", {"vcenter": [f"127.0.0.1:{listening}"], "esxi": ["esx1", "esx1"]})
    assert [(c.host, c.port, c.role) for c in checks] == [("127.0.0.1", listening, "vcenter"), ("esx1", 902, "esxi")]
    assert missing == []
    _, missing = required_checks("agentless", {"vcenter": ["vc"]})
    assert missing == ["esxi"]


def test_required_checks_for_agent_sample_ranges_and_list_the_rest():
    checks, _ = required_checks("agent", {"target": ["kvm1"]})
    here = [c for c in checks if c.src == "migration_host"]
    assert [c.port for c in here] == [26000, 26300, 26600]
    assert all(c.sampled for c in here)
    elsewhere = [c for c in checks if c.src != "migration_host"]
    assert {c.src for c in elsewhere} == {"source"}


def test_run_preflight_reports_each_status(listening, closed_port):
    checks = [
        PortCheck("127.0.0.1", listening, "vcenter", "api"),
        PortCheck("127.0.0.1", closed_port, "esxi", "nfc"),
        PortCheck("source-vm", 80, "migration_host", "agent download", src="source"),
    ]
    rep = RecordingReporter()
    report = run_preflight("agentless", checks, timeout=2.0, reporter=rep)
    assert [r.status for r in report.results] == ["open", "closed", "not_checked"]
    assert [r.check.port for r in report.failed] == [closed_port]
    d = report.to_dict()
    assert d["ok"] is False and d["results"][0]["status"] == "open"
    assert any("closed" in rec["message"] for rec in rep.of_type("log"))


def test_split_host_port():
    assert split_host_port("vc:8443") == ("vc", 8443)
    assert split_host_port("[::1]:443") == ("::1", 443)
    assert split_host_port("vc") == ("vc", None)
