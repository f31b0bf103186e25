"""A stop request (SIGTERM, Ctrl-C) ends ``agent serve`` normally whenever it comes, also while the agent is
still binding its port or announcing itself: never an 'interrupted' exit, and its disks are closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.agent import service
from scmt_cli.agent.server import AgentServer
from scmt_cli.cli.main import TerminatedSignal
from scmt_cli.events import RecordingReporter


@pytest.mark.parametrize("stage", ["start", "announce"])
@pytest.mark.parametrize("signal", [TerminatedSignal, KeyboardInterrupt])
def test_a_stop_before_the_serve_loop_is_a_normal_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       stage: str, signal: type[BaseException]) -> None:
    image = tmp_path / "sda.img"
    image.write_bytes(b"\0" * (1 << 20))
    monkeypatch.setenv(service.TOKEN_ENV, "t" * 32)
    closed: list[str] = []

    def stop_now(*_: object) -> None:
        raise signal()

    if stage == "start":
        monkeypatch.setattr(AgentServer, "start", stop_now)
    else:
        monkeypatch.setattr(service, "_announce", stop_now)
    real_stop = AgentServer.stop

    def stop(self: AgentServer) -> None:
        real_stop(self)
        closed.extend(self.config.disks)

    monkeypatch.setattr(AgentServer, "stop", stop)
    reporter = RecordingReporter()
    result = service.serve_agent(service.ServeRequest("127.0.0.1:0", (f"sda={image}",), plaintext=True), reporter)
    how = "SIGTERM" if signal is TerminatedSignal else "SIGINT"
    lines = [r["message"] for r in reporter.of_type("log")]
    assert f"agent: stop requested ({how})" in lines and lines[-1] == "agent stopped"
    assert closed == ["sda"] and result.disks == [{"name": "sda", "size": 1 << 20}]
