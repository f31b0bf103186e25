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

Domain type (``target.domain_type``): ``kvm``, ``qemu`` (TCG, software
emulation) or ``auto`` (default): on libvirt's QEMU driver ``kvm`` only when
libvirt offers KVM *and* KVM works there -- for a local URI the same check as
``scmt boot`` (:func:`scmt_cli.targets.qemu.kvm_usable`: ``/dev/kvm`` opens and
the CPU shows ``vmx``/``svm``), for a remote one the host CPU features in
libvirt's capabilities -- else ``qemu``, with a warning (a guest started as
``kvm`` where nested virtualisation is off hangs).  Other drivers get ``kvm``.

The serial console of every domain scmt defines is also logged to
``<path>/<vm>/console.log`` (rewritten at each start), which is how ``scmt
boot`` reads a libvirt guest's ready line; ``virsh console`` keeps working.

libvirt errors become :class:`~scmt_cli.errors.TargetPlatformError` (exit 50)
naming the VM and the step.  libvirt's own printing of errors to stderr is
turned off (nothing below ``cli/`` prints).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
DOMAIN_TYPES = ("auto", "kvm", "qemu", "test")
CONSOLE_LOG = "console.log"


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
        dtype = self.spec.extra.get("domain_type") or "auto"
        if dtype not in DOMAIN_TYPES:
            raise PlanError(f"target.domain_type {dtype!r} is not one of {', '.join(DOMAIN_TYPES)}")
        self._domain_type = str(dtype)
        self.lv.registerErrorHandler(lambda _ctx, _err: None, None)
        try:
            self.conn = self.lv.open(uri)
        except self.lv.libvirtError as exc:
            raise TargetUnreachableError(f"cannot connect to libvirt at {_safe_uri(uri)}: {_msg(exc)}") from exc

    @property
    def domain_type(self) -> str:
        """The type of the domains scmt defines (``auto`` resolved once; see the module docstring)."""
        if self._domain_type == "auto":
            dtype, why = self._auto_domain_type()
            if why:
                self.reporter.log("warning", f"{self.describe()}: KVM does not work there ({why}): VMs are defined "
                                             "with domain type 'qemu' (TCG, software emulation, much slower); set "
                                             "target.domain_type: kvm to override")
            self._domain_type = dtype
        return self._domain_type

    def _auto_domain_type(self) -> tuple[str, str]:
        """(``kvm`` or ``qemu``, why not KVM)."""
        with self._step(self.describe(), "read the host's capabilities"):
            if self.conn.getType() != "QEMU":
                return "kvm", ""
            caps = ET.fromstring(self.conn.getCapabilities())  # noqa: S314 - libvirt's own document
        offered = {d.get("type") for g in caps.iterfind("guest") if g.findtext("os_type") == "hvm"
                   for a in g.iterfind("arch") if a.get("name") == "x86_64" for d in a.iterfind("domain")}
        if "kvm" not in offered:
            return "qemu", "libvirt offers no KVM domain on that host (no usable /dev/kvm)"
        if not urlsplit(self.uri).hostname:  # this machine: the same check as scmt boot
            from scmt_cli.targets.qemu import kvm_usable

            ok, why = kvm_usable()
            return ("kvm", "") if ok else ("qemu", why)
        features = {f.get("name") for f in caps.iterfind("host/cpu/feature")}
        if not features & {"vmx", "svm"}:
            return "qemu", "the host CPU shows no vmx/svm in libvirt's capabilities (nested virtualization is off)"
        return "kvm", ""

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

    def vm_dir(self, vm: str) -> Path:
        """The VM's folder under the storage root (disks, ``console.log``)."""
        return storage.vm_dir(self.root, vm)

    def console_log(self, vm: str) -> Path:
        """Where the serial console of ``vm`` is logged (see the module docstring)."""
        return self.vm_dir(vm) / CONSOLE_LOG

    def _xml(self, spec: TargetVmSpec, *, link_up: bool = True, console_log: Path | None = None,
             domain_type: str | None = None) -> str:
        return build_domain_xml(spec, domain_type=domain_type or self.domain_type, link_up=link_up,
                                console_log=str(console_log) if console_log is not None else None)

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
        xml = self._xml(spec, link_up=connected, console_log=self.console_log(vm))
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

    def convert(self, spec: TargetVmSpec, *, direct: bool = False, job: Any = None,
                folder: Path | None = None) -> ConversionResult:
        """Convert the guest on ``spec``'s disks (see :mod:`scmt_cli.targets.convert`) in ``folder``
        (default: the VM's folder)."""
        from scmt_cli.targets.convert import convert_guest

        spec = spec.validated()
        folder = folder or self.vm_dir(spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        return convert_guest(spec, folder, lambda s: self._xml(s), direct=direct,
                             settings=storage.convert_settings(self.spec), job=job, reporter=self.reporter)

    # -- booting (scmt boot, test failover; see scmt_cli.targets.libvirtboot) -------------
    def domain_info(self, vm: str) -> tuple[bool, str]:
        """(running, domain type) of the defined domain ``vm``."""
        dom = self._require(vm, "boot")
        with self._step(vm, "boot"):
            active = bool(dom.isActive())
            root = ET.fromstring(dom.XMLDesc(self.lv.VIR_DOMAIN_XML_INACTIVE))  # noqa: S314 - libvirt's XML
        return active, root.get("type", "kvm")

    def is_active(self, vm: str) -> bool:
        """Whether the domain ``vm`` runs (False when it is off or gone, e.g. a transient one that stopped)."""
        dom = self._lookup(vm)
        if dom is None:
            return False
        with self._step(vm, "state"):
            return bool(dom.isActive())

    def set_domain_type(self, vm: str, dtype: str) -> None:
        """Redefine the shut-off domain ``vm`` with type ``dtype`` (``kvm`` or ``qemu``)."""
        dom = self._require(vm, "change the domain type")
        with self._step(vm, "change the domain type"):
            root = ET.fromstring(dom.XMLDesc(self.lv.VIR_DOMAIN_XML_INACTIVE))  # noqa: S314 - libvirt's XML
            if root.get("type") == dtype:
                return
            root.set("type", dtype)
            self.conn.defineXML(ET.tostring(root, encoding="unicode"))
        self.reporter.event("target_defined", vm=vm, platform=self.kind, redefined=True, domain_type=dtype)

    def power_off(self, vm: str) -> None:
        """Force ``vm`` off now (no guest shutdown); nothing when it is off or unknown."""
        dom = self._lookup(vm)
        if dom is not None:
            with self._step(vm, "power off"):
                if dom.isActive():
                    dom.destroy()

    def stop_transient(self, name: str) -> bool:
        """Stop the transient domain ``name`` (so it is gone); False when there is none.  A persistent domain
        of that name is not scmt's: TargetPlatformError."""
        dom = self._lookup(name)
        if dom is None:
            return False
        with self._step(name, "stop"):
            if dom.isPersistent():
                raise TargetPlatformError(f"{name}: a persistent domain of this name exists on {self.describe()}; "
                                          "it is not a test copy of scmt, so scmt leaves it alone")
            if dom.isActive():
                dom.destroy()
        self.reporter.event("target_state", vm=name, action="stop-transient", platform=self.kind)
        return True

    def run_transient(self, spec: TargetVmSpec, console_log: Path, *, domain_type: str | None = None) -> str:
        """Start a transient domain (gone once it stops) from ``spec``; its console is logged to ``console_log``.

        A transient domain of that name left running by an earlier run is stopped first.
        """
        spec = spec.validated()
        old = self._lookup(spec.name)
        if old is not None:
            with self._step(spec.name, "start"):
                persistent = bool(old.isPersistent())
            if persistent:
                raise TargetPlatformError(f"{spec.name}: a persistent domain of this name exists on "
                                          f"{self.describe()}; scmt will not replace it")
            self.power_off(spec.name)
        console_log.parent.mkdir(parents=True, exist_ok=True)
        with self._step(spec.name, "start"):
            self.conn.createXML(self._xml(spec, link_up=False, console_log=console_log, domain_type=domain_type), 0)
        self.reporter.event("target_state", vm=spec.name, action="start-transient", platform=self.kind)
        return spec.name

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
