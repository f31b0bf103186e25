"""The ``libvirt`` target platform, through ``libvirt-python``.

The only module that imports ``libvirt``; a missing binding raises
:class:`~scmt_cli.errors.ConfigError` (exit 5) naming the package.  Disks live
under the plan's ``target.path`` (same layout as the ``dir`` platform, see
:mod:`scmt_cli.targets.storage`); that folder must be where the hypervisor
sees it too (local, or shared storage mounted at the same path).

Network isolation changes each NIC's link state: live and persistent through
``updateDeviceFlags`` (what ``virsh domif-setlink`` does); a driver without
device updates (libvirt's ``test:///`` driver) gets its persistent definition
rewritten when the VM is off, and refuses clearly when it runs.

libvirt errors become :class:`~scmt_cli.errors.TargetPlatformError` (exit 50)
naming the VM and the step.  libvirt's own printing of errors to stderr is
turned off (nothing below ``cli/`` prints).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scmt_cli.errors import ConfigError, PlanError, TargetPlatformError, TargetUnreachableError, redact_text, redact_url
from scmt_cli.events import NullReporter, Reporter
from scmt_cli.targets import storage
from scmt_cli.targets.base import (
    ConversionResult,
    DiskRequest,
    PlatformSpec,
    PowerState,
    PreparedDisk,
    TargetState,
    TargetVmSpec,
)
from scmt_cli.targets.domxml import build_domain_xml, interfaces_xml, link_is_up, set_link_state

try:  # the binding is optional: only this platform needs it
    import libvirt as _libvirt
except ImportError:  # pragma: no cover - exercised by monkeypatching in tests
    _libvirt = None

# virDomainState values (stable libvirt ABI)
_RUNNING_STATES = {1, 2, 4}  # running, blocked, being shut down
_PAUSED_STATES = {3, 7}  # paused, pm-suspended
_POLL_S = 0.2


def _safe_uri(uri: str) -> str:
    """``uri`` without secrets.  Only URIs that can hold them go through redact_url, which
    would turn ``test:///default`` into ``test:/default``."""
    return redact_url(uri) if ("@" in uri or "?" in uri) else uri


def _msg(exc: Any) -> str:
    return redact_text(str(exc.get_error_message() or exc))


def _module() -> Any:
    if _libvirt is None:
        raise ConfigError(
            "the libvirt target needs the Python package 'libvirt-python', which is not installed",
            hint="pip install libvirt-python (it builds against libvirt-dev and pkg-config)",
        )
    return _libvirt


class LibvirtPlatform:
    """Target VMs defined in a libvirt connection; see the module docstring."""

    kind = "libvirt"

    def __init__(
        self,
        uri: str,
        root: Path,
        *,
        spec: PlatformSpec | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.lv = _module()
        self.uri = uri
        self.root = Path(root).absolute()
        self.spec = spec or PlatformSpec(type="libvirt", path=str(self.root), uri=uri)
        self.reporter: Reporter = reporter or NullReporter()
        dtype = self.spec.extra.get("domain_type", "kvm")
        if dtype not in ("kvm", "qemu", "test"):
            raise PlanError(f"target.domain_type {dtype!r} is not one of kvm, qemu, test")
        self.domain_type = str(dtype)
        self.lv.registerErrorHandler(lambda _ctx, _err: None, None)
        try:
            self.conn = self.lv.open(uri)
        except self.lv.libvirtError as exc:
            raise TargetUnreachableError(f"cannot connect to libvirt at {_safe_uri(uri)}: {_msg(exc)}") from exc

    # -- helpers ---------------------------------------------------------
    def describe(self) -> str:
        return f"libvirt:{_safe_uri(self.uri)}"

    @contextmanager
    def _step(self, vm: str, step: str) -> Iterator[None]:
        try:
            yield
        except self.lv.libvirtError as exc:
            raise TargetPlatformError(f"{vm}: {step}: libvirt: {_msg(exc)}") from exc

    def _lookup(self, vm: str) -> Any | None:
        try:
            return self.conn.lookupByName(vm)
        except self.lv.libvirtError as exc:
            if exc.get_error_code() == self.lv.VIR_ERR_NO_DOMAIN:
                return None
            raise TargetPlatformError(f"{vm}: look up: libvirt: {_msg(exc)}") from exc

    def _require(self, vm: str, step: str) -> Any:
        dom = self._lookup(vm)
        if dom is None:
            raise TargetPlatformError(f"{vm}: {step}: the VM is not defined on {self.describe()}")
        return dom

    def _state_of(self, vm: str, dom: Any | None) -> TargetState:
        if dom is None:
            return TargetState(vm, defined=False, platform=self.kind)
        with self._step(vm, "state"):
            code = dom.state()[0]
            xml = dom.XMLDesc(0)
        power: PowerState = "running" if code in _RUNNING_STATES else "paused" if code in _PAUSED_STATES else "shutoff"
        return TargetState(vm, True, power, link_is_up(xml, vm=vm), self.kind)

    # -- disks -----------------------------------------------------------
    def prepare_disks(self, vm: str, disks: Sequence[DiskRequest]) -> list[PreparedDisk]:
        return storage.prepare_disks(self.root, vm, disks, self.spec.disk_format, self.reporter)

    def finalize_disks(self, vm: str) -> list[PreparedDisk]:
        return storage.finalize_disks(self.root, vm, self.reporter, timeout=self.spec.v2v_timeout_s)

    # -- lifecycle -------------------------------------------------------
    def define(self, spec: TargetVmSpec) -> TargetState:
        """Define (or redefine) the domain; an isolated VM stays isolated after a redefine."""
        spec = spec.validated()
        vm = spec.name
        existing = self._lookup(vm)
        connected = True
        if existing is not None:
            with self._step(vm, "define"):
                old = existing.XMLDesc(self.lv.VIR_DOMAIN_XML_INACTIVE)
                uuid = existing.UUIDString()
            connected = link_is_up(old, vm=vm) or "<interface" not in old
            if spec.uuid is None:  # a redefine must keep the domain's identity
                spec = dataclasses.replace(spec, uuid=uuid)
            elif spec.uuid.lower() != uuid.lower():
                raise TargetPlatformError(
                    f"{vm}: define: a VM of this name exists with UUID {uuid}, the plan asks for {spec.uuid}"
                )
        xml = build_domain_xml(spec, domain_type=self.domain_type, link_up=connected)
        with self._step(vm, "define"):
            dom = self.conn.defineXML(xml)
        self.reporter.event("target_defined", vm=vm, platform=self.kind, redefined=existing is not None)
        return self._state_of(vm, dom)

    def start(self, vm: str) -> TargetState:
        dom = self._require(vm, "start")
        with self._step(vm, "start"):
            if not dom.isActive():
                dom.create()
                self.reporter.event("target_state", vm=vm, action="start", platform=self.kind)
        return self._state_of(vm, dom)

    def stop(self, vm: str, *, graceful: bool = True, timeout: float = 60.0) -> TargetState:
        """ACPI shutdown and wait up to ``timeout`` s, then force off (a warning); or force off at once."""
        dom = self._require(vm, "stop")
        with self._step(vm, "stop"):
            if not dom.isActive():
                return self._state_of(vm, dom)
            if graceful:
                dom.shutdown()
                deadline = time.monotonic() + timeout
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(_POLL_S)
                if dom.isActive():
                    self.reporter.log("warning", f"{vm}: did not shut down within {timeout:g} s; forcing it off", vm=vm)
            if dom.isActive():
                dom.destroy()
        self.reporter.event("target_state", vm=vm, action="shutdown" if graceful else "power-off", platform=self.kind)
        return self._state_of(vm, dom)

    def destroy(self, vm: str, *, remove_disks: bool = False) -> TargetState:
        """Force off and undefine (with its UEFI variables); ``remove_disks`` deletes the VM's disk folder."""
        dom = self._lookup(vm)
        if dom is not None:
            with self._step(vm, "destroy"):
                if dom.isActive():
                    dom.destroy()
                try:
                    dom.undefineFlags(self.lv.VIR_DOMAIN_UNDEFINE_NVRAM)
                except self.lv.libvirtError:
                    dom.undefine()
            self.reporter.event("target_state", vm=vm, action="undefine", platform=self.kind)
        if remove_disks:
            folder = storage.vm_dir(self.root, vm)
            if folder.exists():
                shutil.rmtree(folder)
        return TargetState(vm, defined=False, platform=self.kind)

    def set_network(self, vm: str, connected: bool) -> TargetState:
        step = "connect network" if connected else "disconnect network"
        dom = self._require(vm, step)
        with self._step(vm, step):
            active = bool(dom.isActive())
            xml = dom.XMLDesc(0)
        if "<interface" not in xml or link_is_up(xml, vm=vm) == connected:
            return self._state_of(vm, dom)
        flags = self.lv.VIR_DOMAIN_AFFECT_CONFIG | (self.lv.VIR_DOMAIN_AFFECT_LIVE if active else 0)
        try:
            for iface in interfaces_xml(set_link_state(xml, connected, vm=vm), vm=vm):
                dom.updateDeviceFlags(iface, flags)
        except self.lv.libvirtError as exc:
            if exc.get_error_code() not in (self.lv.VIR_ERR_NO_SUPPORT, self.lv.VIR_ERR_OPERATION_UNSUPPORTED):
                raise TargetPlatformError(f"{vm}: {step}: libvirt: {_msg(exc)}") from exc
            if active:
                raise TargetPlatformError(
                    f"{vm}: {step}: this libvirt driver cannot change the link state of a running VM",
                    hint="stop the target VM instead",
                ) from exc
            with self._step(vm, step):
                inactive = dom.XMLDesc(self.lv.VIR_DOMAIN_XML_INACTIVE)
                dom = self.conn.defineXML(set_link_state(inactive, connected, vm=vm))
        self.reporter.event("target_state", vm=vm, action=step.replace(" ", "-"), platform=self.kind)
        return self._state_of(vm, dom)

    def state(self, vm: str) -> TargetState:
        return self._state_of(vm, self._lookup(vm))

    def convert(self, spec: TargetVmSpec, *, direct: bool = False, job: Any = None) -> ConversionResult:
        """Convert the guest on the final disks (see :mod:`scmt_cli.targets.convert`)."""
        from scmt_cli.targets.convert import convert_guest

        spec = spec.validated()
        folder = storage.vm_dir(self.root, spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        return convert_guest(spec, folder, lambda s: build_domain_xml(s, domain_type=self.domain_type), direct=direct,
                             settings=storage.convert_settings(self.spec), job=job, reporter=self.reporter)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except self.lv.libvirtError:
                pass

    def __enter__(self) -> LibvirtPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
