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


def test_stopping_thaws_before_anything_a_second_signal_could_cut_short(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A second Ctrl-C while stop() waits for running requests must not leave a source file system frozen."""
    image = tmp_path / "sda.img"
    image.write_bytes(b"\0" * (1 << 20))
    monkeypatch.setenv(service.TOKEN_ENV, "t" * 32)
    server = AgentServer(service.build_config(service.ServeRequest("127.0.0.1:0", (f"sda={image}",),
                                                                   plaintext=True)), RecordingReporter())
    server.start()
    order: list[str] = []
    monkeypatch.setattr(server.control, "thaw", lambda owner=None: order.append("thaw") or [])

    def second_signal(*_: object, **__: object) -> None:
        order.append("wait for requests")
        raise KeyboardInterrupt

    monkeypatch.setattr(server._pool, "shutdown", second_signal)
    with pytest.raises(KeyboardInterrupt):
        server.stop()
    assert order == ["thaw", "wait for requests"]
    for d in server.config.disks.values():
        d.close()


def test_the_freeze_watchdog_runs_before_the_first_fifreeze_and_an_error_thaws(monkeypatch: pytest.MonkeyPatch) -> None:
    from scmt_cli.agent.freeze import Freezer

    freezer = Freezer([], on_expire=None)
    monkeypatch.setattr(freezer, "mounts", lambda: [("/mnt/a", "ext4"), ("/mnt/b", "ext4")])
    seen: list[bool] = []

    def freeze_one(mnt: str, deadline: float) -> str:
        seen.append(freezer._watchdog is not None)
        if mnt == "/mnt/b":
            raise RuntimeError("can't start new thread")
        return ""

    thawed: list[str] = []
    monkeypatch.setattr(freezer, "_freeze_one", freeze_one)
    monkeypatch.setattr(freezer, "thaw", lambda owner=None: thawed.append("thaw") or [])
    with pytest.raises(RuntimeError):
        freezer.freeze(5.0, owner="conn")
    assert seen == [True, True] and thawed == ["thaw", "thaw"]  # the thaw before freezing, and the one after
    if freezer._watchdog is not None:
        freezer._watchdog.cancel()
