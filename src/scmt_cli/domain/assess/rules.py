"""The assessment rules: one check function per rule id.

Every rule is registered in :data:`RULES` with its id, default severity, the
methods it applies to and a remedy.  :func:`evaluate` runs every check on a VM
and returns method-independent hits; :func:`findings_for` resolves them to the
severities of one migration method.  Checks read only the normalized
inventory model and never guess: a value the inventory does not report
(``None``) triggers no rule, except the ``*.unknown`` rules that exist to say so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scmt_cli.domain.assess.model import (
    AGENT_METHODS,
    ALL_METHODS,
    SEVERITY_ORDER,
    SNAPSHOT_METHODS,
    AssessContext,
    Finding,
    Rule,
    Severity,
)
from scmt_cli.domain.compat import FAMILY_NAMES, match_os, storage_support, vmware_ranges
from scmt_cli.domain.inventory import VM

GIB = 1024**3
TIB = 1024**4


@dataclass(frozen=True)
class Hit:
    """A check's raw result: ``severity`` overrides the rule's when set."""

    message: str
    subject: str = ""
    severity: Severity | None = None


Check = Callable[[VM, AssessContext], Iterator[Hit]]
RULES: dict[str, Rule] = {}
CHECKS: dict[str, Check] = {}


def rule(
    rid: str,
    severity: Severity,
    methods: tuple[str, ...],
    title: str,
    remedy: str,
    by_method: dict[str, Severity] | None = None,
) -> Callable[[Check], Check]:
    """Register a check function under a rule id (ids are unique)."""

    def deco(fn: Check) -> Check:
        if rid in RULES:
            raise ValueError(f"duplicate rule id {rid}")
        RULES[rid] = Rule(rid, severity, methods, title, remedy, by_method or {})
        CHECKS[rid] = fn
        return fn

    return deco


# ----------------------------------------------------------------- guest OS


@rule("os.unknown", "warning", ALL_METHODS, "guest OS not recognised",
      "set the guest OS type in vCenter or install VMware Tools so the guest reports it; check it by hand")
def _os_unknown(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    m = match_os(vm.guest_id, vm.guest_full_name, vm.tools_guest_full_name)
    if m.family is None:
        seen = vm.tools_guest_full_name or vm.guest_full_name or vm.guest_id or "nothing reported"
        yield Hit(f"guest OS not recognised ({seen})")


@rule("os.unsupported", "blocker", ALL_METHODS, "guest OS not supported",
      "upgrade or replace the guest OS before migrating (the seed recommends an OS replacement path)")
def _os_unsupported(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    m = match_os(vm.guest_id, vm.guest_full_name, vm.tools_guest_full_name)
    row = m.row
    if row is None:
        return
    if not row.supported:
        note = f": {row.note}" if row.note else ""
        yield Hit(f"{row.label} is not supported{note}")
        return
    if m.bits is not None and m.bits not in row.bits:
        yield Hit(f"{row.label} {m.bits}-bit is not supported (only {'/'.join(map(str, row.bits))}-bit)")
    if vm.firmware == "efi" and "uefi" not in row.boot:
        yield Hit(f"{row.label} is supported with BIOS boot only; this VM boots UEFI")


@rule("os.not_listed", "warning", ALL_METHODS, "guest OS release not in the compatibility table",
      "test-migrate one VM of this release first; add a row to compat/data/os.yaml once validated")
def _os_not_listed(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    m = match_os(vm.guest_id, vm.guest_full_name, vm.tools_guest_full_name)
    if m.family is not None and m.row is None:
        fam = FAMILY_NAMES.get(m.family, m.family)
        if m.version is None:
            yield Hit(f"{fam}: the release is not reported (VMware Tools would report it), so it cannot be checked")
        else:
            yield Hit(f"{fam} {m.version} is not in the compatibility table")


@rule("os.not_in_seed", "info", ALL_METHODS, "guest OS supported by scmt but not listed by the seed",
      "none needed; the row was added by scmt (see its note in compat/data/os.yaml)")
def _os_added(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    m = match_os(vm.guest_id, vm.guest_full_name, vm.tools_guest_full_name)
    if m.row is not None and m.row.supported and m.row.source != "seed":
        yield Hit(f"{m.row.label}: {m.row.note or 'added by scmt'}")


# ------------------------------------------------------------------- VMware


def _esxi_version(vm: VM, ctx: AssessContext) -> str | None:
    host = ctx.inventory.host(vm.host)
    return host.esxi_version if host else None


@rule("esxi.version.unsupported", "blocker", SNAPSHOT_METHODS, "ESXi version below the supported range",
      "use an agent-based method for VMs on this host, or upgrade ESXi")
def _esxi_old(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    ver = _esxi_version(vm, ctx)
    if ver is None:
        return
    rng = vmware_ranges()["agentless"]
    try:
        if rng.classify(ver) == "below":
            yield Hit(f"host {vm.host} runs ESXi {ver}; agentless methods need {rng.min} to {rng.max}")
    except ValueError:
        yield Hit(f"host {vm.host} reports an unreadable ESXi version {ver!r}", severity="warning")


@rule("esxi.version.not_validated", "warning", SNAPSHOT_METHODS, "ESXi version newer than the validated range",
      "run a test migration on this ESXi version first, or use an agent-based method")
def _esxi_new(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    ver = _esxi_version(vm, ctx)
    if ver is None:
        return
    rng = vmware_ranges()["agentless"]
    try:
        if rng.classify(ver) == "above":
            yield Hit(f"host {vm.host} runs ESXi {ver}: not validated (validated: {rng.min} to {rng.max})")
    except ValueError:
        return


@rule("esxi.version.unknown", "info", SNAPSHOT_METHODS, "ESXi version not reported",
      "include the vHost tab in the RVTools export, or assess against vCenter directly")
def _esxi_unknown(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if _esxi_version(vm, ctx) is None:
        yield Hit(f"ESXi version of host {vm.host or '(unknown host)'} not known")


# -------------------------------------------------------------------- disks


@rule("disk.rdm.physical", "blocker", ALL_METHODS, "physical-mode RDM",
      "detach the raw LUN before migrating and map it to the new VM afterwards (raw disks are remapped, not copied)",
      by_method={"agent": "warning", "hot-backup": "warning"})
def _rdm_phys(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    for d in vm.disks:
        if d.rdm == "physical":
            yield Hit(f"{d.label} is a physical-mode RDM: snapshots cannot capture it", subject=d.label)


@rule("disk.rdm.virtual", "warning", ALL_METHODS, "virtual-mode RDM",
      "present the LUN to the KVM host and map it to the new VM; raw disks are remapped, not copied")
def _rdm_virt(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    for d in vm.disks:
        if d.rdm == "virtual":
            yield Hit(f"{d.label} is a virtual-mode RDM", subject=d.label)


@rule("disk.independent", "blocker", SNAPSHOT_METHODS, "independent disk",
      "switch the disk to dependent mode (VM powered off) or use an agent-based method")
def _independent(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    for d in vm.disks:
        if d.mode is not None and d.mode.startswith("independent"):
            yield Hit(f"{d.label} is {d.mode.replace('_', '-')}: snapshots skip it", subject=d.label)


@rule("disk.shared", "blocker", ALL_METHODS, "shared (multi-writer) disk",
      "migrate the cluster nodes as one group that fails over together; stop the cluster service during the switch",
      by_method={"agent": "warning", "hot-backup": "warning"})
def _shared(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    for d in vm.disks:
        if d.sharing and d.sharing not in ("sharingNone", "none", "no sharing"):
            yield Hit(f"{d.label} is shared ({d.sharing})", subject=d.label)


@rule("disk.mbr_over_2tib", "blocker", ALL_METHODS, "MBR disk larger than 2 TiB",
      "convert the disk to GPT inside the guest, or split the data before migrating")
def _mbr(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    limit = storage_support().mbr_max_bytes
    for d in vm.disks:
        if d.partition_style == "mbr" and d.capacity_bytes > limit:
            yield Hit(f"{d.label} is MBR-partitioned and {d.capacity_bytes / TIB:.2f} TiB (MBR addresses 2 TiB)",
                      subject=d.label)


@rule("fs.unsupported", "blocker", ALL_METHODS, "unsupported file system",
      "move the data to a supported file system (ext2/3/4, xfs, FAT, FAT32, NTFS, ReFS) before migrating")
def _fs(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    support = storage_support()
    for p in vm.partitions:
        if p.filesystem and support.normalize(p.filesystem) is None:
            yield Hit(f"{p.mount} uses {p.filesystem}, which the copy does not support", subject=p.mount)


@rule("datastore.free_space", "warning", SNAPSHOT_METHODS, "datastore short of space for snapshots",
      "free space on the datastore (snapshots grow with every write during the sync)")
def _ds_space(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    per_ds: dict[str, int] = {}
    for d in vm.disks:
        if d.datastore and d.rdm is None:
            per_ds[d.datastore] = per_ds.get(d.datastore, 0) + d.capacity_bytes
    for name, size in sorted(per_ds.items()):
        ds = ctx.inventory.datastore(name)
        if ds is None or ds.free_bytes is None:
            continue
        need = int(size * ctx.snapshot_reserve)
        if ds.free_bytes < min(GIB, need):
            yield Hit(f"datastore {name} has {ds.free_bytes / GIB:.1f} GiB free; snapshots of this VM need about "
                      f"{need / GIB:.1f} GiB", subject=name, severity="blocker")
        elif ds.free_bytes < need:
            yield Hit(f"datastore {name} has {ds.free_bytes / GIB:.1f} GiB free, below the "
                      f"{ctx.snapshot_reserve:.0%} of {size / GIB:.1f} GiB snapshots of this VM may need", subject=name)


# ------------------------------------------------------------------ devices


@rule("device.usb", "blocker", ALL_METHODS, "USB device attached",
      "unmount the USB device (e.g. a license key) before migrating and map it to the new VM afterwards",
      by_method={"agent": "warning", "hot-backup": "warning"})
def _usb(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.usb_devices:
        yield Hit(f"{vm.usb_devices} USB device(s) attached")


@rule("device.passthrough", "blocker", ALL_METHODS, "PCI passthrough device",
      "remove the passthrough device before migrating; configure the equivalent device on the KVM host",
      by_method={"agent": "warning", "hot-backup": "warning"})
def _pci(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.pci_passthrough:
        yield Hit(f"{vm.pci_passthrough} PCI passthrough device(s)")


@rule("device.sriov", "blocker", ALL_METHODS, "SR-IOV network adapter",
      "replace the SR-IOV adapter with vmxnet3 before migrating; configure SR-IOV on the KVM host afterwards",
      by_method={"agent": "warning", "hot-backup": "warning"})
def _sriov(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.sriov_nics:
        yield Hit(f"{vm.sriov_nics} SR-IOV adapter(s)")


@rule("vm.vtpm", "warning", ALL_METHODS, "virtual TPM",
      "suspend BitLocker / export keys sealed to the vTPM before migrating; the vTPM state is not copied")
def _vtpm(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.vtpm:
        yield Hit("the VM has a vTPM; its contents are not migrated")


@rule("boot.secure_boot", "warning", ALL_METHODS, "UEFI secure boot enabled",
      "boot the target with UEFI secure boot and Microsoft keys enrolled, or disable secure boot for the switch")
def _secure_boot(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.secure_boot:
        yield Hit("UEFI secure boot is on: injected drivers must be signed and the target firmware must enroll keys")


# -------------------------------------------------------- snapshots and CBT


@rule("snapshot.existing", "blocker", SNAPSHOT_METHODS, "existing snapshots",
      "delete or consolidate the VM's snapshots before the first sync; or set source.vddk_libdir so VDDK reads "
      "through the snapshot chain")
def _snapshots(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.snapshots:
        names = ", ".join(s.name for s in vm.snapshots[:5])
        if ctx.vddk:
            yield Hit(f"{len(vm.snapshots)} snapshot(s) exist ({names}); VDDK reads through the chain, but every "
                      "sync adds to it", severity="warning")
        else:
            yield Hit(f"{len(vm.snapshots)} snapshot(s) exist ({names}); over /folder only the base disk is "
                      "readable, which the chain makes stale")


@rule("snapshot.consolidation_needed", "blocker", SNAPSHOT_METHODS, "disk consolidation needed",
      "run 'Snapshots > Consolidate' in vCenter before migrating")
def _consolidate(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.consolidation_needed:
        yield Hit("vCenter reports that the disks need consolidation")


@rule("cbt.disabled", "warning", SNAPSHOT_METHODS, "Changed Block Tracking disabled",
      "scmt turns CBT on at the first sync (the VM is stunned while a snapshot is taken and removed); with "
      "source.enable_cbt: false, enable ctkEnabled yourself first")
def _cbt(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    severity: Severity | None = None if ctx.enable_cbt else "blocker"
    change = ("scmt will turn it on at the first sync (a VM stun)" if ctx.enable_cbt
              else "source.enable_cbt is false, so scmt will not turn it on")
    if vm.cbt_enabled is False:
        yield Hit(f"CBT is disabled: incremental syncs need it; {change}", severity=severity)
        return
    for d in vm.disks:
        if d.cbt_enabled is False and d.rdm != "physical":
            yield Hit(f"CBT is disabled on {d.label}; {change}", subject=d.label, severity=severity)


# ------------------------------------------------------------- guest state


@rule("tools.not_running", "warning", ALL_METHODS, "VMware Tools not running",
      "install or start VMware Tools: a graceful shutdown at the switch and IP discovery need them")
def _tools(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.power_state == "poweredOn" and vm.tools_status in ("notRunning", "notInstalled"):
        yield Hit(f"VMware Tools are {'not installed' if vm.tools_status == 'notInstalled' else 'not running'}")


@rule("vm.powered_off", "blocker", AGENT_METHODS, "VM powered off",
      "agent methods need a running guest: power the VM on, or use a snapshot-based method (cold copy)")
def _powered_off(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.power_state is not None and vm.power_state != "poweredOn":
        yield Hit(f"the VM is {vm.power_state}")


@rule("agent.memory.total", "blocker", AGENT_METHODS, "too little memory for the agent",
      "give the VM more than 2 GiB of memory, or use an agentless method")
def _agent_mem(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.memory_mib is not None and vm.memory_mib <= 2048:
        yield Hit(f"the VM has {vm.memory_mib} MiB of memory; the agent needs more than 2 GiB in total")


@rule("agent.memory.free", "blocker", AGENT_METHODS, "too little free memory for the agent",
      "free memory inside the guest (more than 1 GiB), or use an agentless method")
def _agent_free(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.memory_free_mib is not None and vm.memory_free_mib <= 1024:
        yield Hit(f"the guest has {vm.memory_free_mib} MiB free; the agent needs more than 1 GiB free")


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_LABEL_OK = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def safe_name(name: str) -> str:
    """A target-safe form of a VM name: letters, digits, ``._-``, at most 63 characters."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-.") or "vm"
    return out[:63]


@rule("vm.name.invalid", "warning", ALL_METHODS, "VM name not usable as a target name",
      "rename the VM or set target.name in the plan (letters, digits, '.', '_', '-'; at most 63 characters)")
def _name(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if not vm.name.strip() or "/" in vm.name or "\x00" in vm.name:
        yield Hit(f"VM name {vm.name!r} cannot be used on the target", severity="blocker")
    elif not _NAME_OK.match(vm.name):
        yield Hit(f"VM name {vm.name!r} will be created as {safe_name(vm.name)!r}")


@rule("vm.hostname.invalid", "warning", ALL_METHODS, "guest host name not RFC 1123",
      "fix the host name inside the guest (labels of letters, digits and '-', at most 63 characters each)")
def _hostname(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    h = vm.hostname
    if h is None:
        return
    labels = h.rstrip(".").split(".")
    if not h or len(h) > 253 or not all(_LABEL_OK.match(lab) for lab in labels):
        yield Hit(f"host name {h!r} is not a valid RFC 1123 name")


@rule("nic.no_ip", "warning", ALL_METHODS, "no IP address reported",
      "start VMware Tools or record the addresses in the plan: the preflight and the network switch need them")
def _no_ip(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    if vm.power_state == "poweredOff":
        return
    if vm.nics and not vm.ips:
        yield Hit(f"none of the {len(vm.nics)} network adapter(s) reports an IP address")


@rule("sizing.shrink", "blocker", ALL_METHODS, "target smaller than the source",
      "only expand: give the target at least the source's CPUs, memory and disk sizes")
def _shrink(vm: VM, ctx: AssessContext) -> Iterator[Hit]:
    t = ctx.target
    if t is None:
        return
    if t.cpus is not None and vm.cpus is not None and t.cpus < vm.cpus:
        yield Hit(f"target has {t.cpus} CPUs, the source {vm.cpus}", subject="cpus")
    if t.memory_mib is not None and vm.memory_mib is not None and t.memory_mib < vm.memory_mib:
        yield Hit(f"target has {t.memory_mib} MiB of memory, the source {vm.memory_mib} MiB", subject="memory")
    for d in vm.disks:
        size = t.disk_bytes.get(d.label, t.disk_bytes.get(str(d.key)))
        if size is not None and size < d.capacity_bytes:
            yield Hit(f"target {d.label} is {size} bytes, the source {d.capacity_bytes} bytes", subject=d.label)


# ------------------------------------------------------------------ running


def evaluate(vm: VM, ctx: AssessContext) -> list[tuple[Rule, Hit]]:
    """Run every check on ``vm``; the hits are method-independent."""
    out: list[tuple[Rule, Hit]] = []
    for rid, check in CHECKS.items():
        for hit in check(vm, ctx):
            out.append((RULES[rid], hit))
    return out


def findings_for(hits: list[tuple[Rule, Hit]], method: str) -> list[Finding]:
    """The findings that apply to ``method``, with that method's severities, most severe first."""
    out: list[Finding] = []
    for r, hit in hits:
        sev = r.severity_for(method)
        if sev is None:
            continue
        if hit.severity is not None:
            sev = hit.severity
        out.append(Finding(r.id, sev, hit.message, r.remedy, r.methods, hit.subject))
    out.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return out
