"""No password or session cookie appears in reporter records, logs, exception messages or reprs."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from scmt_cli.errors import ScmtError
from scmt_cli.events import RecordingReporter
from scmt_cli.lab.parse import load_lab
from scmt_cli.lab.vcenter import FakeVCenter, start_estate, stop_estate
from scmt_cli.vsphere.settings import ConnectionSettings, resolve_settings

from .conftest import EXAMPLE_LAB

PASSWORD = "Pa55-Do-Not-Leak-7731"  # noqa: S105 - the secret the test hunts for


def test_fake_session_leaks_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lab = dataclasses.replace(load_lab(EXAMPLE_LAB), password=PASSWORD)
    estate = start_estate(lab, tmp_path / "vc")
    rep = RecordingReporter()
    texts: list[str] = []
    try:
        host, port = estate.base_url.split("://")[1].rsplit(":", 1)
        settings = resolve_settings(
            url=f"https://{lab.user}:{PASSWORD}@{host}:{port}/sdk",
            thumbprint=estate.http.thumbprint,
        )
        texts += [repr(settings), str(settings), settings.url, settings.origin]
        vc = FakeVCenter(estate, settings, rep)
        vc.connect()
        token = vc._token
        assert token and len(token) >= 16
        snap = vc.create_snapshot("win2019-app01", "s")
        src = vc.open_disk("win2019-app01", snap, 2000)
        estate.http.expire_sessions()  # forces a re-login, logged through the reporter
        src.read(0, 4096)
        texts.append(src.describe())
        token2 = vc._token
        failing = [
            lambda: vc.remove_snapshot("win2019-app01", "snapshot-404"),
            lambda: FakeVCenter(estate, dataclasses.replace(settings, password=PASSWORD + "x")).connect(),
            lambda: FakeVCenter(estate, dataclasses.replace(settings, thumbprint=":".join(["00"] * 32))).connect(),
            lambda: resolve_settings(url=f"https://u:{PASSWORD}@h/sdk", thumbprint="zz"),
        ]
        for fn in failing:
            with pytest.raises(ScmtError) as info:
                fn()
            texts += [str(info.value), json.dumps(info.value.to_dict()), repr(info.value)]
        vc.remove_snapshot("win2019-app01", snap)
        texts.append(json.dumps([r.data for r in rep.records], default=str))
        texts.append(caplog.text)
        texts.append(repr(ConnectionSettings(host="h", password=PASSWORD)))
        vc.close()
    finally:
        stop_estate(estate)
    blob = "\n".join(texts)
    assert rep.records  # the test looked at something
    for secret in (PASSWORD, token, token2):
        assert secret and secret not in blob


def test_pyvmomi_session_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from . import vcsim as vcsim_mod

    try:
        sim = vcsim_mod.start(vms=1)
    except vcsim_mod.VcsimUnavailable as exc:
        pytest.skip(f"vcsim unavailable: {exc}")
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    rep = RecordingReporter()
    try:
        from scmt_cli.vsphere.adapter import PyVmomiVCenter

        settings = ConnectionSettings(
            host=sim.host, port=sim.port, user=sim.user, password=sim.password, thumbprint=sim.thumbprint
        )
        vc = PyVmomiVCenter(settings, rep)
        vc.connect()
        cookie = vc._cookie().split("=", 1)[1].strip('"')
        assert len(cookie) >= 16
        vm = vc.inventory().vms[0].name
        snap = vc.create_snapshot(vm, "s")
        for fn in (
            lambda: vc.remove_snapshot(vm, "snapshot-404"),
            lambda: PyVmomiVCenter(dataclasses.replace(settings, password="nope-" + sim.password)).connect(),
        ):
            with pytest.raises(ScmtError) as info:
                fn()
            texts += [str(info.value), json.dumps(info.value.to_dict())]
        vc.remove_snapshot(vm, snap)
        vc.close()
        texts += [caplog.text, json.dumps([r.data for r in rep.records], default=str), repr(settings)]
    finally:
        sim.stop()
    blob = "\n".join(texts)
    assert sim.password not in blob and cookie not in blob
