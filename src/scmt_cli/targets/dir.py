"""The ``dir`` target platform: the embedded default, with no hypervisor needed.

Per VM a folder ``<root>/<vm>/`` holding the disks (see
:mod:`scmt_cli.targets.storage`), ``domain.xml`` (valid for ``virsh define``;
its NIC link states follow :meth:`DirPlatform.set_network`) and ``state.json``,
the machine-readable record of the VM's power and network state::

    {"format": 1, "name": "web01", "defined": true, "power": "running",
     "network_connected": true, "updated": "2026-11-26T09:40:00Z", "history": [...]}

Power here is a record, not a running guest: ``start`` marks the VM running so
that failover, rollback and status behave exactly as with a hypervisor, and an
operator (or a later step) can ``virsh define domain.xml`` on a KVM host.
Every write is atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scmt_cli.errors import TargetPlatformError
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.targets import storage
from scmt_cli.targets.base import (
    ConversionResult,
    DiskRequest,
    PlatformSpec,
    PreparedDisk,
    TargetState,
    TargetVmSpec,
)
from scmt_cli.targets.domxml import build_domain_xml, link_is_up, set_link_state

STATE_FORMAT = 1
HISTORY_LIMIT = 50


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class DirPlatform:
    """Target VMs as folders; see the module docstring.  Not thread-safe per VM (services lock per VM)."""

    kind = "dir"

    def __init__(self, root: Path, *, spec: PlatformSpec | None = None, reporter: Reporter | None = None) -> None:
        self.root = Path(root).absolute()
        self.spec = spec or PlatformSpec(type="dir", path=str(self.root))
        self.reporter: Reporter = reporter or NullReporter()

    # -- helpers ---------------------------------------------------------
    def describe(self) -> str:
        return f"dir:{self.root}"

    def vm_dir(self, vm: str) -> Path:
        return storage.vm_dir(self.root, vm)

    def _state_path(self, vm: str) -> Path:
        return self.vm_dir(vm) / "state.json"

    def _xml_path(self, vm: str) -> Path:
        return self.vm_dir(vm) / "domain.xml"

    def _record(self, vm: str) -> dict[str, Any] | None:
        data = storage.read_json(self._state_path(vm), vm=vm)
        if data is None:
            return None
        if data.get("format") != STATE_FORMAT or data.get("power") not in ("running", "shutoff", "paused"):
            raise TargetPlatformError(
                f"{vm}: {self._state_path(vm)} is not a state record this scmt understands "
                f"(format {data.get('format')!r}, power {data.get('power')!r})"
            )
        return data

    def _save(self, vm: str, record: dict[str, Any], action: str) -> TargetState:
        history = list(record.get("history", []))[-(HISTORY_LIMIT - 1) :]
        history.append({"at": _now(), "action": action, "power": record["power"],
                        "network_connected": record["network_connected"]})  # fmt: skip
        record = {**record, "format": STATE_FORMAT, "name": vm, "updated": _now(), "history": history}
        storage.write_json_atomic(self._state_path(vm), record)
        self.reporter.event("target_state", vm=vm, action=action, power=record["power"],
                            network_connected=record["network_connected"], platform=self.kind)  # fmt: skip
        return self._to_state(vm, record)

    def _to_state(self, vm: str, record: dict[str, Any] | None) -> TargetState:
        if record is None or not record.get("defined"):
            return TargetState(vm, defined=False, platform=self.kind)
        return TargetState(vm, True, record["power"], bool(record["network_connected"]), self.kind)

    def _defined(self, vm: str, step: str) -> dict[str, Any]:
        record = self._record(vm)
        if record is None or not record.get("defined"):
            raise TargetPlatformError(f"{vm}: {step}: the VM is not defined on {self.describe()}")
        return record

    # -- disks -----------------------------------------------------------
    def prepare_disks(self, vm: str, disks: Sequence[DiskRequest]) -> list[PreparedDisk]:
        return storage.prepare_disks(self.root, vm, disks, self.spec.disk_format, self.reporter)

    def finalize_disks(self, vm: str) -> list[PreparedDisk]:
        return storage.finalize_disks(self.root, vm, self.reporter, timeout=self.spec.v2v_timeout_s)

    # -- lifecycle -------------------------------------------------------
    def define(self, spec: TargetVmSpec) -> TargetState:
        """Write ``domain.xml`` and mark the VM defined; keeps power and network state on a redefine."""
        spec = spec.validated()
        vm = spec.name
        for i, disk in enumerate(spec.disks):
            if not Path(disk.path).exists():
                raise TargetPlatformError(f"{vm}: define: disks[{i}] {disk.path} does not exist")
        record = self._record(vm) or {}
        was_defined = bool(record.get("defined"))
        connected = bool(record.get("network_connected", True)) if was_defined else True
        xml = build_domain_xml(spec, link_up=connected)
        storage.write_atomic(self._xml_path(vm), xml.encode())
        record = {
            "defined": True,
            "power": record.get("power", "shutoff") if was_defined else "shutoff",
            "network_connected": connected and bool(spec.nics),
            "history": record.get("history", []),
        }
        return self._save(vm, record, "redefine" if was_defined else "define")

    def start(self, vm: str) -> TargetState:
        record = self._defined(vm, "start")
        if record["power"] == "running":
            return self._to_state(vm, record)
        return self._save(vm, {**record, "power": "running"}, "start")

    def stop(self, vm: str, *, graceful: bool = True, timeout: float = 60.0) -> TargetState:
        record = self._defined(vm, "stop")
        if record["power"] == "shutoff":
            return self._to_state(vm, record)
        return self._save(vm, {**record, "power": "shutoff"}, "shutdown" if graceful else "power-off")

    def destroy(self, vm: str, *, remove_disks: bool = False) -> TargetState:
        """Forget the VM: remove ``domain.xml`` and mark it undefined; ``remove_disks`` deletes its folder."""
        folder = self.vm_dir(vm)
        if remove_disks:
            if folder.exists():
                shutil.rmtree(folder)
                self.reporter.event("target_removed", vm=vm, path=str(folder))
            return TargetState(vm, defined=False, platform=self.kind)
        record = self._record(vm)
        if record is None or not record.get("defined"):
            return TargetState(vm, defined=False, platform=self.kind)
        self._xml_path(vm).unlink(missing_ok=True)
        self._save(vm, {**record, "defined": False, "power": "shutoff", "network_connected": False}, "undefine")
        return TargetState(vm, defined=False, platform=self.kind)

    def set_network(self, vm: str, connected: bool) -> TargetState:
        record = self._defined(vm, "connect network" if connected else "disconnect network")
        xml_path = self._xml_path(vm)
        try:
            xml = xml_path.read_text()
        except OSError as exc:
            raise TargetPlatformError(f"{vm}: set network: cannot read {xml_path}: {exc.strerror}") from exc
        if "<interface" not in xml:
            return self._to_state(vm, record)  # nothing to connect or isolate
        if link_is_up(xml, vm=vm) != connected:
            storage.write_atomic(xml_path, set_link_state(xml, connected, vm=vm).encode())
        if bool(record["network_connected"]) == connected:
            return self._to_state(vm, record)
        return self._save(vm, {**record, "network_connected": connected},
                          "connect-network" if connected else "disconnect-network")  # fmt: skip

    def state(self, vm: str) -> TargetState:
        return self._to_state(vm, self._record(vm))

    def convert(self, spec: TargetVmSpec, *, direct: bool = False, job: Any = None,
                folder: Path | None = None) -> ConversionResult:
        """Convert the guest on ``spec``'s disks (see :mod:`scmt_cli.targets.convert`) in ``folder``
        (default: the VM's folder)."""
        from scmt_cli.targets.convert import convert_guest

        spec = spec.validated()
        folder = folder or storage.vm_dir(self.root, spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        return convert_guest(spec, folder, lambda s: build_domain_xml(s), direct=direct,
                             settings=storage.convert_settings(self.spec), job=job, reporter=self.reporter)

    def close(self) -> None:
        return None

    def __enter__(self) -> DirPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
