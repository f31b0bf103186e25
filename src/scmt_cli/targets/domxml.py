"""libvirt domain XML for a :class:`~scmt_cli.targets.base.TargetVmSpec`.

Built with :mod:`xml.etree.ElementTree`, so names, paths and descriptions are
escaped properly.  The document is valid input for ``virsh define``: q35
machine (``pc`` when a disk sits on an IDE bus, which q35 lacks), UEFI through
libvirt's firmware auto-selection with secure boot when asked (plus SMM, which
secure boot needs), virtio disks and NICs, a guest-agent channel (used for
graceful shutdown) and a serial console (optionally logged to a file, which
is how scmt reads a libvirt guest's console).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from scmt_cli.errors import TargetPlatformError
from scmt_cli.targets.base import TargetVmSpec

_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


def _dev_name(prefix: str, n: int) -> str:
    """``vda``, ``vdb`` ... ``vdz``, ``vdaa`` ... like the kernel names disks."""
    letters = ""
    n += 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def build_domain_xml(spec: TargetVmSpec, *, domain_type: str = "kvm", link_up: bool = True,
                     console_log: str | None = None) -> str:
    """Return the domain XML for ``spec`` (call ``spec.validated()`` first so every NIC has a MAC).

    ``link_up=False`` writes every NIC with ``<link state='down'/>`` (an
    isolated VM).  ``console_log`` logs the serial console to that file,
    rewritten at each start (``<log append='off'>``), besides its pty.
    """
    dom = ET.Element("domain", type=domain_type)
    ET.SubElement(dom, "name").text = spec.name
    if spec.uuid:
        ET.SubElement(dom, "uuid").text = spec.uuid
    if spec.description:
        ET.SubElement(dom, "description").text = spec.description
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(dom, "currentMemory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(dom, "vcpu", placement="static").text = str(spec.cpus)

    uses_ide = any(d.bus == "ide" for d in spec.disks)
    machine = "pc" if uses_ide and spec.firmware == "bios" else "q35"
    os_el = ET.SubElement(dom, "os")
    if spec.firmware == "efi":
        os_el.set("firmware", "efi")
    ET.SubElement(os_el, "type", arch="x86_64", machine=machine).text = "hvm"
    if spec.firmware == "efi":
        fw = ET.SubElement(os_el, "firmware")
        ET.SubElement(fw, "feature", enabled="yes" if spec.secure_boot else "no", name="secure-boot")
        ET.SubElement(fw, "feature", enabled="yes" if spec.secure_boot else "no", name="enrolled-keys")
        if spec.secure_boot:
            ET.SubElement(os_el, "loader", secure="yes")
    ET.SubElement(os_el, "boot", dev="hd")

    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if spec.secure_boot:
        ET.SubElement(features, "smm", state="on")
    ET.SubElement(dom, "cpu", mode="host-model")
    ET.SubElement(dom, "clock", offset="utc")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"

    devices = ET.SubElement(dom, "devices")
    counters: dict[str, int] = {}
    for disk in spec.disks:
        prefix = _DEV_PREFIX[disk.bus]
        n = counters.get(prefix, 0)
        counters[prefix] = n + 1
        d = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(d, "driver", name="qemu", type=disk.format, cache="none", discard="unmap")
        ET.SubElement(d, "source", file=disk.path)
        ET.SubElement(d, "target", dev=_dev_name(prefix, n), bus=disk.bus)
    if any(d.bus == "scsi" for d in spec.disks):
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for nic in spec.nics:
        if nic.network.startswith("bridge:"):
            iface = ET.SubElement(devices, "interface", type="bridge")
            ET.SubElement(iface, "mac", address=str(nic.mac))
            ET.SubElement(iface, "source", bridge=nic.network.removeprefix("bridge:"))
        else:
            iface = ET.SubElement(devices, "interface", type="network")
            ET.SubElement(iface, "mac", address=str(nic.mac))
            ET.SubElement(iface, "source", network=nic.network)
        ET.SubElement(iface, "model", type=nic.model)
        ET.SubElement(iface, "link", state="up" if link_up else "down")
    chan = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(chan, "target", type="virtio", name="org.qemu.guest_agent.0")
    serial = ET.SubElement(devices, "serial", type="pty")
    if console_log:
        ET.SubElement(serial, "log", file=console_log, append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type="vga")
    ET.SubElement(devices, "memballoon", model="virtio")
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def _parse(xml: str, vm: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - our own or libvirt's XML, not untrusted input
    except ET.ParseError as exc:
        raise TargetPlatformError(f"{vm}: domain XML is not well-formed: {exc}") from exc


def set_link_state(xml: str, up: bool, *, vm: str = "VM") -> str:
    """Return ``xml`` with every interface's link ``up`` or ``down`` (adds ``<link>`` when missing)."""
    root = _parse(xml, vm)
    for iface in root.iter("interface"):
        link = iface.find("link")
        if link is None:
            link = ET.SubElement(iface, "link")
        link.set("state", "up" if up else "down")
    return ET.tostring(root, encoding="unicode") + "\n"


def link_is_up(xml: str, *, vm: str = "VM") -> bool:
    """True when the domain has at least one interface and every one has its link up.

    An interface without a ``<link>`` element is up (libvirt's default).
    """
    root = _parse(xml, vm)
    ifaces = list(root.iter("interface"))
    if not ifaces:
        return False
    return all((i.find("link") is None or i.find("link").get("state", "up") == "up") for i in ifaces)  # type: ignore[union-attr]


def interfaces_xml(xml: str, *, vm: str = "VM") -> list[str]:
    """Each ``<interface>`` element of ``xml`` as its own XML string (for device updates)."""
    root = _parse(xml, vm)
    return [ET.tostring(i, encoding="unicode") for i in root.iter("interface")]
