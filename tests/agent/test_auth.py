"""Authentication, replay, mutual proof, corruption on the wire, and the served-disk semantics."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scmt_cli.agent import protocol as p
from scmt_cli.agent.client import AgentConnection, WatchStream
from scmt_cli.agent.service import ServeRequest, build_config
from scmt_cli.agent.transport import AgentDisk, load_token, open_agent_source, parse_agent_url
from scmt_cli.agent.wire import read_frame
from scmt_cli.errors import (
    AuthenticationError,
    ConfigError,
    ReadOnlyTargetError,
    SizeMismatchError,
    TransportError,
    UsageError,
)
from scmt_cli.transports.base import open_target
from tests.agent.servers import TOKEN, running_agent

MiB = 1024 * 1024


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    with open(path, "wb") as fh:
        fh.truncate(8 * MiB)
        fh.seek(MiB)
        fh.write(os.urandom(MiB))
        fh.seek(4 * MiB)
        fh.write(b"compressible " * 80000)
    return path


def test_right_token_reads_and_wrong_token_is_refused_and_logged_without_secrets(tmp_path: Path,
                                                                                 image: Path) -> None:
    with running_agent({"sda": image}, tmp_path) as agent:
        with AgentDisk("127.0.0.1", agent.port, "sda", TOKEN.encode(), tls=agent.tls) as disk:
            assert disk.size == 8 * MiB
            assert disk.read(MiB, MiB) == image.read_bytes()[MiB : 2 * MiB]
        bad = b"a-wrong-token-that-is-long-enough"
        with pytest.raises(AuthenticationError) as info:
            AgentDisk("127.0.0.1", agent.port, "sda", bad, tls=agent.tls)
        assert info.value.exit_code == 11
        assert bad.decode() not in str(info.value) and TOKEN not in str(info.value)
        assert agent.server.auth_failures == 1
        text = str([r.data for r in agent.reporter.records])
        assert "authentication failed" in text
        assert TOKEN not in text and bad.decode() not in text


def test_agent_refuses_to_start_without_a_token_or_with_a_short_one(tmp_path: Path, image: Path) -> None:
    with pytest.raises(ConfigError, match="without a token"):
        build_config(ServeRequest("127.0.0.1:0", (f"sda={image}",)), env={})
    short = tmp_path / "short.token"
    short.write_text("tooshort")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="shorter than 16 bytes") as info:
        build_config(ServeRequest("127.0.0.1:0", (f"sda={image}",), short), env={})
    assert "tooshort" not in str(info.value)
    with pytest.raises(ConfigError, match="shorter"):
        build_config(ServeRequest("127.0.0.1:0", (f"sda={image}",), plaintext=True),
                     env={"SCMT_AGENT_TOKEN": "x" * 15})
    cfg = build_config(ServeRequest("127.0.0.1:0", (f"sda={image}",), plaintext=True),
                       env={"SCMT_AGENT_TOKEN": "y" * 16})
    assert cfg.token == b"y" * 16 and "y" * 16 not in repr(cfg)
    for d in cfg.disks.values():
        d.close()


def _raw_session(port: int, client_nonce: bytes, auth_mac: bytes | None, token: bytes | None = None
                 ) -> tuple[p.Frame, bytes, bytes]:
    """Run a handshake by hand; return the reply to AUTH, the server nonce and the MAC sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(p.encode_frame(p.T_HELLO, 1, p.encode_json({"version": 1, "client_nonce": client_nonce.hex()})))
        ch = read_frame(s)
        assert ch is not None and ch.type == p.T_CHALLENGE
        server_nonce = bytes.fromhex(p.decode_json(ch.payload)["server_nonce"])
        mac = auth_mac if auth_mac is not None else p.client_mac(token or b"", server_nonce, client_nonce)
        s.sendall(p.encode_frame(p.T_AUTH, 2, p.encode_json({"mac": mac.hex()})))
        reply = read_frame(s)
        assert reply is not None
        return reply, server_nonce, mac


def test_a_replayed_response_is_refused(tmp_path: Path, image: Path) -> None:
    with running_agent({"sda": image}, tmp_path, plaintext=True) as agent:  # raw frames: no TLS layer
        nonce = os.urandom(32)
        ok, sn1, mac = _raw_session(agent.port, nonce, None, TOKEN.encode())
        assert ok.type == p.T_AUTH | p.REPLY
        # An eavesdropper replays the same HELLO and AUTH on a new connection: the server nonce differs.
        replay, sn2, _ = _raw_session(agent.port, nonce, mac)
        assert sn1 != sn2
        assert replay.type == p.T_ERROR and p.decode_json(replay.payload)["code"] == p.E_AUTH
        assert agent.server.auth_failures == 1


def _fake_agent(token: bytes) -> Iterator[int]:
    """A server that answers HELLO but does not know ``token`` (it echoes a random proof)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            hello = read_frame(conn)
            assert hello is not None
            conn.sendall(p.encode_frame(p.T_CHALLENGE, 0, p.encode_json({"version": 1,
                                                                          "server_nonce": os.urandom(32).hex()})))
            read_frame(conn)
            conn.sendall(p.encode_frame(p.T_AUTH | p.REPLY, 0, p.encode_json({"mac": os.urandom(32).hex()})))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield port
    t.join(5)
    srv.close()


def test_the_client_refuses_an_agent_that_cannot_prove_the_token() -> None:
    for port in _fake_agent(TOKEN.encode()):
        with pytest.raises(AuthenticationError, match="could not prove"):
            AgentConnection("127.0.0.1", port, TOKEN.encode(), where="agent://fake")


class _CorruptingProxy:
    """Forwards TCP both ways; flips one byte of the server's stream after ``skip`` bytes."""

    def __init__(self, port: int, skip: int) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.target, self.skip = port, skip
        threading.Thread(target=self._run, daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, corrupt: bool) -> None:
        seen = 0
        try:
            while data := a.recv(65536):
                if corrupt and seen <= self.skip < seen + len(data):
                    buf = bytearray(data)
                    buf[self.skip - seen] ^= 0x01
                    data = bytes(buf)
                seen += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self) -> None:
        client, _ = self.srv.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)


def test_corruption_on_the_wire_is_detected_by_the_frame_checksum(tmp_path: Path, image: Path) -> None:
    with running_agent({"sda": image}, tmp_path, plaintext=True) as agent:  # (TLS would catch it first)
        # Handshake replies and the LIST reply come first; corrupt deep inside the first DATA payload.
        proxy = _CorruptingProxy(agent.port, skip=2000)
        disk = AgentDisk("127.0.0.1", proxy.port, "sda", TOKEN.encode(), tls=agent.tls)
        try:
            with pytest.raises(TransportError, match="checksum") as info:
                disk.read(MiB, MiB)
            assert info.value.transient  # the retry layer reconnects
        finally:
            disk.close()
        proxy.srv.close()


def test_requests_in_flight_are_matched_by_id(tmp_path: Path, image: Path) -> None:
    content = image.read_bytes()
    with running_agent({"sda": image}, tmp_path, queue_depth=2) as agent:
        disk = AgentDisk("127.0.0.1", agent.port, "sda", TOKEN.encode(), tls=agent.tls)
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for j in range(12):
                    off = ((k * 5 + j * 3) % 8) * MiB + k * 512
                    n = min(MiB - 512 * k, 8 * MiB - off)
                    assert disk.read(off, n) == content[off : off + n]
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        disk.close()
        assert not errors


def test_disk_errors_and_read_only(tmp_path: Path, image: Path) -> None:
    with running_agent({"sda": image}, tmp_path) as agent:
        with pytest.raises(UsageError, match="serves: sda"):
            open_agent_source(agent.url("sdz"))
        disk = open_agent_source(agent.url("sda"))
        try:
            with pytest.raises(SizeMismatchError):
                disk.read(8 * MiB - 10, 20)
            digests = disk.remote_digests(MiB)  # type: ignore[attr-defined]
            assert len(digests) == 8 and digests[0] == "0" and digests[1] != "0" and digests[7] == "0"
        finally:
            disk.close()
        with pytest.raises(ReadOnlyTargetError):
            open_target(agent.url("sda"), size=MiB)
        assert image.stat().st_size == 8 * MiB


@pytest.mark.parametrize(("url", "why"), [
    ("agent://h:1/sda", "exactly one of token_file and token_env"),
    ("agent://h:1/?token_env=X", "name one disk"),
    ("agent://u:pw@h:1/sda?token_env=X", "no user name"),
    ("agent://h:1/sda?token_env=X&token=abc", "unknown parameter"),
    ("agent://h:99999/sda?token_env=X", "malformed"),
])
def test_bad_urls_are_one_clear_usage_error(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as info:
        parse_agent_url(url)
    assert "pw" not in str(info.value) and "abc" not in str(info.value)


def test_token_from_env_is_checked_and_never_echoed() -> None:
    with pytest.raises(ConfigError, match="is not set"):
        load_token(token_env="NOPE", env={})
    with pytest.raises(ConfigError) as info:
        load_token(token_env="T", env={"T": "short-secret"})
    assert "short-secret" not in str(info.value)
    assert load_token(token_env="T", env={"T": " " + "z" * 20 + "\n"}) == b"z" * 20


def test_compression_on_and_off_over_the_wire(tmp_path: Path, image: Path) -> None:
    content = image.read_bytes()
    with running_agent({"sda": image}, tmp_path) as agent:
        for compress in (True, False):
            disk = AgentDisk("127.0.0.1", agent.port, "sda", TOKEN.encode(), compress=compress, tls=agent.tls)
            try:
                assert disk.read(4 * MiB, MiB) == content[4 * MiB : 5 * MiB]  # text: compresses well
                assert disk.read(MiB, MiB) == content[MiB : 2 * MiB]  # random: does not
                stats = disk.wire_stats()
            finally:
                disk.close()
            assert stats["bytes_of_data"] == 2 * MiB
            if compress:
                assert MiB < stats["bytes_on_wire"] < MiB + MiB // 10
            else:
                assert stats["bytes_on_wire"] == 2 * MiB
    with running_agent({"sda": image}, tmp_path, compress=False) as agent:  # --no-compress on the agent
        with AgentDisk("127.0.0.1", agent.port, "sda", TOKEN.encode(), tls=agent.tls) as disk:
            assert disk.read(4 * MiB, MiB) == content[4 * MiB : 5 * MiB]
            assert disk.wire_stats()["bytes_on_wire"] == MiB


def test_watch_pushes_changed_chunks_and_refuses_a_bad_interval(tmp_path: Path, image: Path) -> None:
    with running_agent({"sda": image}, tmp_path) as agent:
        conn = AgentConnection("127.0.0.1", agent.port, TOKEN.encode(), where="agent://t", tls=agent.tls)
        try:
            bad = conn.watch("sda", MiB, 0.0)
            with pytest.raises(TransportError, match="interval"):
                bad.wait_ready(30)
            stream = conn.watch("sda", MiB, 0.1)
            stream.wait_ready(30)
            assert stream.drain() == set()
            with open(image, "r+b") as fh:
                fh.seek(6 * MiB + 5)
                fh.write(b"!")
            seen: set[int] = set()
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                seen |= stream.drain()
                time.sleep(0.02)
            assert seen == {6}
        finally:
            conn.close()


@given(st.dictionaries(st.sampled_from(["round", "changed", "more", "x"]),
                       st.one_of(st.integers(-5, 5), st.lists(st.integers(-3, 10**6), max_size=5), st.text(max_size=5),
                                 st.none())))
def test_malformed_pushes_break_the_stream_cleanly(body: dict[str, object]) -> None:
    stream = WatchStream.__new__(WatchStream)
    stream.conn, stream.ready, stream.error, stream.rounds = AgentConnection.__new__(AgentConnection), False, None, 0
    stream.conn.where = "agent://t"
    out: set[int] = set()
    stream._take(p.Frame(p.T_WATCH | p.REPLY, 1, p.encode_json(body)), out)  # never raises
    assert stream.error is None or isinstance(stream.error, TransportError)


def test_digest_requests_cover_a_bounded_number_of_bytes(tmp_path: Path, image: Path) -> None:
    """One DIGESTS request covers at most batch_bytes of the disk, so a slow source disk read at the agent's
    storage share answers each well within the reply timeout; the digests are the same whatever the batch."""
    from scmt_cli.agent.transport import DIGEST_BATCH_BYTES

    assert DIGEST_BATCH_BYTES == 256 * MiB
    with running_agent({"sda": image}, tmp_path) as agent:
        disk = open_agent_source(agent.url("sda"))
        try:
            whole = disk.remote_digests(MiB)  # type: ignore[attr-defined]
            asked: list[int] = []
            real = disk._conn.json  # type: ignore[attr-defined]

            def spy(kind: int, body: dict[str, object]) -> dict[str, object]:
                asked.append(int(body["count"]))  # type: ignore[call-overload]
                return real(kind, body)  # type: ignore[no-any-return]

            disk._conn.json = spy  # type: ignore[attr-defined]
            assert disk.remote_digests(MiB, batch_bytes=3 * MiB) == whole  # type: ignore[attr-defined]
            assert asked == [3, 3, 2]
        finally:
            disk.close()
