"""Semantic checks that a schema cannot express.

Contract: :func:`check` takes the located raw document (which may still hold
schema violations: every access here is defensive and silently skips values
of the wrong type, the schema check has already reported those) and returns
``(errors, warnings, notes)``.  Errors make the plan invalid (exit 2),
warnings make ``plan validate`` exit 1, notes are information.

Rules: unique VM/group/target names; groups name existing VMs and a VM is in
at most one group; NIC networks are values of ``target.networks``; datastores
map through ``target.storage``; MAC/IP/gateway/DNS are well formed; sizes, rates
and durations parse; the cutover window lies in the future with ``end > start``;
the agent methods have an agent address; source credentials are references;
and, with an inventory, the only-expand rule for CPU, memory and disks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from scmt_cli.domain import units
from scmt_cli.domain.inventory import Inventory
from scmt_cli.domain.plan.model import AGENT_METHODS, DEFAULT_METHOD, METHODS, VCENTER_METHODS
from scmt_cli.domain.plan.schemacheck import suggest
from scmt_cli.domain.plan.sizing import check_against_inventory
from scmt_cli.domain.plan.yamlsource import Located, PathT
from scmt_cli.errors import Problem

_MAC = re.compile(r"^(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_SIZE_FIELDS = ("memory",)
_NOTE_NO_INVENTORY = (
    "sizing (cpus, memory, disk sizes) and source disks/NICs were not checked against the source: no inventory "
    "was given (use --inventory FILE or source.inventory)"
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class Checker:
    """Collects problems for one document; see the module docstring."""

    def __init__(self, located: Located, *, inventory: Inventory | None, now: dt.datetime) -> None:
        self.loc = located
        self.doc = _dict(located.data)
        self.inventory = inventory
        self.now = now
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.notes: list[str] = []

    # -- helpers ---------------------------------------------------------
    def error(self, path: PathT, message: str, *, key: bool = False) -> None:
        self.errors.append(self.loc.problem(path, message, key=key))

    def warn(self, path: PathT, message: str, *, key: bool = False) -> None:
        self.warnings.append(self.loc.problem(path, message, key=key))

    def vms(self) -> list[tuple[int, dict[str, Any]]]:
        return [(i, vm) for i, vm in enumerate(_list(self.doc.get("vms"))) if isinstance(vm, dict)]

    def method_of(self, vm: dict[str, Any]) -> str:
        method = vm.get("method", _dict(self.doc.get("defaults")).get("method", DEFAULT_METHOD))
        return method if method in METHODS else DEFAULT_METHOD

    def parse(self, path: PathT, value: Any, parser: Callable[[Any], Any], *, positive: bool = True) -> Any:
        """Run a units parser; a ValueError becomes a located problem."""
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            return None
        try:
            result = parser(value)
        except ValueError as err:
            self.error(path, str(err))
            return None
        if positive and not result:
            self.error(path, "must be greater than zero")
            return None
        return result

    # -- rules -----------------------------------------------------------
    def run(self) -> None:
        self.check_units_and_windows()
        self.check_source()
        self.check_target()
        self.check_names_and_groups()
        self.check_vms()
        self.check_managed_cutover()
        if self.inventory is None:
            self.notes.append(_NOTE_NO_INVENTORY)
        else:
            errors, warnings = check_against_inventory(self.loc, self.inventory)
            self.errors += errors
            self.warnings += warnings

    def settings_blocks(self) -> list[tuple[PathT, dict[str, Any]]]:
        blocks: list[tuple[PathT, dict[str, Any]]] = [(("defaults",), _dict(self.doc.get("defaults")))]
        blocks += [(("vms", i), vm) for i, vm in self.vms()]
        return blocks

    def check_units_and_windows(self) -> None:
        for base, block in self.settings_blocks():
            for name in ("sync_interval", "downtime_tolerance"):
                self.parse(base + (name,), block.get(name), units.parse_duration)
            self.parse(base + ("bandwidth",), block.get("bandwidth"), units.parse_rate)
            for phase, spec in _dict(block.get("hooks")).items():
                self.parse(base + ("hooks", phase, "timeout"), _dict(spec).get("timeout"), units.parse_duration)
            window = block.get("cutover_window")
            if isinstance(window, dict):
                self.check_window(base + ("cutover_window",), window)
        for i, vm in self.vms():
            for name in _SIZE_FIELDS:
                self.parse_size(("vms", i, name), vm.get(name))
            for j, disk in enumerate(_list(vm.get("disks"))):
                if isinstance(disk, dict):
                    self.parse_size(("vms", i, "disks", j, "size"), disk.get("size"))

    def parse_size(self, path: PathT, value: Any) -> None:
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return  # no unit: the schema already says "a size with a unit"
        self.parse(path, value, units.parse_size)

    def check_window(self, path: PathT, window: dict[str, Any]) -> None:
        stamps: dict[str, dt.datetime] = {}
        for end in ("start", "end"):
            text = window.get(end)
            if not isinstance(text, str):
                continue
            try:
                when = dt.datetime.fromisoformat(text.strip())
            except ValueError:
                self.error(path + (end,), f"expected an ISO-8601 date-time like 2030-01-18T22:00:00+01:00, "
                                          f"got {text!r}")
                continue
            if when.tzinfo is None or when.utcoffset() is None:
                self.error(path + (end,), f"{text!r} has no time zone; add one, e.g. {text.strip()}+00:00 or ...Z")
                continue
            stamps[end] = when
        start, finish = stamps.get("start"), stamps.get("end")
        if start is not None and start <= self.now:
            self.error(path + ("start",), f"cutover window start {start.isoformat()} is in the past; "
                                          "expected a future time")
        if start is not None and finish is not None and finish <= start:
            self.error(path + ("end",), "cutover window end must be after its start")

    def check_source(self) -> None:
        source = self.doc.get("source")
        src = _dict(source)
        url = _str(src.get("url"))
        needs_vcenter = sorted({self.method_of(vm) for _, vm in self.vms()} & VCENTER_METHODS)
        if needs_vcenter and not url:
            where: PathT = ("source",) if isinstance(source, dict) else ()
            self.error(where, f"method {needs_vcenter[0]} reads disks through vCenter: set source.url, "
                              "e.g. https://vcenter.example.com/sdk")
        if url is not None:
            self.check_vcenter_url(url)
            if "username" not in src:
                self.error(("source",), "missing 'username', the vCenter user that goes with 'url'")
            refs = [k for k in ("password_env", "password_file") if k in src]
            if not refs:
                self.error(("source",), "missing the vCenter password reference: password_env (an "
                                        "environment variable name) or password_file")
            elif len(refs) == 2:
                self.error(("source", "password_file"), "give either password_env or password_file, not both",
                           key=True)
        if "ca_file" in src and "thumbprint" in src:
            self.error(("source", "thumbprint"), "give either ca_file or thumbprint, not both", key=True)
        if src.get("insecure") is True:
            if "ca_file" in src or "thumbprint" in src:
                self.error(("source", "insecure"), "insecure: true contradicts ca_file/thumbprint; remove one",
                           key=True)
            else:
                self.warn(("source", "insecure"), "TLS verification of vCenter is disabled (insecure: true); "
                                                  "pin the certificate with thumbprint or ca_file instead", key=True)

    def check_vcenter_url(self, url: str) -> None:
        path: PathT = ("source", "url")
        if re.search(r"://[^/]*:[^/]*@", url):
            return  # reported by the secret check, without echoing it
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            self.error(path, "expected a vCenter URL like https://vcenter.example.com/sdk (bad port?)")
            return
        if parts.scheme != "https":
            self.error(path, f"expected an https:// URL (vCenter's SDK), got scheme {parts.scheme or 'none'!r}")
        elif not parts.hostname:
            self.error(path, "expected a host name, like https://vcenter.example.com/sdk")
        elif "@" in parts.netloc:
            self.error(path, "user name in the URL: put it in source.username instead")
        elif parts.path not in ("", "/", "/sdk", "/sdk/") or parts.query or parts.fragment:
            self.error(path, f"expected the SDK endpoint https://{parts.netloc}/sdk, got path {parts.path!r}")

    def check_target(self) -> None:
        target = _dict(self.doc.get("target"))
        ttype = target.get("type")
        if ttype == "dir" and "uri" in target:
            self.error(("target", "uri"), "'uri' is for type: libvirt; type: dir uses 'path'", key=True)
        if ttype == "dir" and "domain_type" in target:
            self.error(("target", "domain_type"), "'domain_type' is for type: libvirt", key=True)
        if ttype == "libvirt":
            if "path" in target:
                self.error(("target", "path"), "'path' is for type: dir; type: libvirt uses 'uri'", key=True)
            if "uri" not in target:
                self.error(("target",), "type: libvirt needs 'uri', e.g. qemu:///system")
        if ttype == "dir" and "path" not in target:
            self.error(("target",), "type: dir needs 'path', the directory for disk images")
        for name in ("v2v_timeout", "v2v_stall_timeout"):
            self.parse(("target", name), target.get(name), units.parse_duration)
        host = _str(target.get("migration_host"))
        if host is not None and not is_host(host):
            self.error(("target", "migration_host"), f"expected a host name or IP address (no port, no URL), "
                                                     f"got {host!r}")

    def check_names_and_groups(self) -> None:
        seen: dict[str, int] = {}
        targets: dict[str, int] = {}
        for i, vm in self.vms():
            name = _str(vm.get("name"))
            if name is None:
                continue
            if name in seen:
                self.error(("vms", i, "name"), f"duplicate VM name {name!r} (also vms[{seen[name]}])")
            else:
                seen[name] = i
            tname = _str(vm.get("target_name")) or name
            if tname in targets and targets[tname] != seen.get(name, -1):
                self.error(("vms", i, "target_name" if "target_name" in vm else "name"),
                           f"target name {tname!r} is already used by vms[{targets[tname]}]")
            targets.setdefault(tname, i)
        groups: dict[str, int] = {}
        member_of: dict[str, str] = {}
        for g, group in enumerate(_list(self.doc.get("groups"))):
            if not isinstance(group, dict):
                continue
            gname = _str(group.get("name"))
            if gname is not None:
                if gname in groups:
                    self.error(("groups", g, "name"), f"duplicate group name {gname!r} (also groups[{groups[gname]}])")
                groups.setdefault(gname, g)
            for j, member in enumerate(_list(group.get("vms"))):
                if not isinstance(member, str):
                    continue
                path: PathT = ("groups", g, "vms", j)
                if member not in seen:
                    near = suggest(member, list(seen))
                    hint = f"; did you mean {near!r}?" if near else ""
                    self.error(path, f"group member {member!r} is not a VM listed under 'vms'{hint}")
                elif member in member_of:
                    other = member_of[member]
                    same = other == (gname or "")
                    self.error(path, f"VM {member!r} is listed twice in this group" if same
                               else f"VM {member!r} is already in group {other!r}; a VM belongs to at most one group")
                else:
                    member_of[member] = gname or ""
                    member_vm = self.vms_by_name().get(member)
                    if member_vm is not None and self.method_of(member_vm) == "managed":
                        self.warn(path, f"VM {member!r} uses method managed, which cuts over on its own; the group "
                                        "cannot fail over together (use agentless, agent or hot-backup)")

    def vms_by_name(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for _, vm in self.vms():
            name = _str(vm.get("name"))
            if name is not None:
                out.setdefault(name, vm)
        return out

    def check_managed_cutover(self) -> None:
        """Managed migration has no cutover knobs: warn where a plan sets them for a managed VM."""
        defaults = _dict(self.doc.get("defaults"))
        group_of: dict[str, tuple[int, dict[str, Any]]] = {}
        for g, group in enumerate(_list(self.doc.get("groups"))):
            for member in _list(_dict(group).get("vms")):
                if isinstance(member, str):
                    group_of.setdefault(member, (g, _dict(group)))
        fixed = {"source_action": "shutdown", "target_state": "on"}
        warned: set[PathT] = set()
        for i, vm in self.vms():
            if self.method_of(vm) != "managed":
                continue
            g, group = group_of.get(_str(vm.get("name")) or "", (-1, {}))
            for key, forced in fixed.items():
                where: PathT | None = None
                if key in vm:
                    where = ("vms", i, key)
                elif key in group:
                    where = ("groups", g, key)
                elif key in defaults and "method" not in vm:
                    where = ("defaults", key)
                if where is not None and where not in warned and \
                        vm.get(key, group.get(key, defaults.get(key))) != forced:
                    warned.add(where)
                    self.warn(where, f"{key} is ignored for managed VMs: managed migration always uses "
                                     f"{key} {forced} (use agentless to choose)")

    def check_vms(self) -> None:
        target = _dict(self.doc.get("target"))
        networks = _dict(target.get("networks"))
        storage = _dict(target.get("storage"))
        kvm_networks = sorted({v for v in networks.values() if isinstance(v, str)})
        macs: dict[str, PathT] = {}
        defaults = _dict(self.doc.get("defaults"))
        direct_default = defaults.get("direct") is True
        for i, vm in self.vms():
            base: PathT = ("vms", i)
            method = self.method_of(vm)
            direct = vm.get("direct", direct_default) is True
            for j, nic in enumerate(_list(vm.get("nics"))):
                if isinstance(nic, dict):
                    self.check_nic(base + ("nics", j), nic, networks, kvm_networks, macs, direct)
            self.check_unique(base + ("nics",), vm.get("nics"), "label", "NIC")
            for j, disk in enumerate(_list(vm.get("disks"))):
                if isinstance(disk, dict):
                    self.check_disk(base + ("disks", j), disk, storage)
            self.check_unique(base + ("disks",), vm.get("disks"), "label", "disk")
            self.check_unique(base + ("disks",), vm.get("disks"), "key", "disk")
            self.check_agent(base, vm, method)

    def check_unique(self, path: PathT, items: Any, field: str, what: str) -> None:
        seen: dict[Any, int] = {}
        for j, item in enumerate(_list(items)):
            value = _dict(item).get(field)
            if value is None or isinstance(value, (dict, list)):
                continue
            if value in seen:
                self.error(path + (j, field), f"{what} {field} {value!r} is listed twice (also [{seen[value]}])")
            seen.setdefault(value, j)

    def check_nic(self, path: PathT, nic: dict[str, Any], networks: dict[str, Any], kvm_networks: list[str],
                  macs: dict[str, PathT], direct: bool) -> None:
        if "label" not in nic and "source" not in nic:
            self.error(path, "name the source NIC with 'label' (e.g. 'Network adapter 1') or 'source' "
                             "(its VMware network)")
        network = _str(nic.get("network"))
        source = _str(nic.get("source"))
        if network is not None and network not in kvm_networks:
            near = suggest(network, kvm_networks)
            known = f"did you mean {near!r}?" if near else (
                f"defined: {', '.join(kvm_networks)}" if kvm_networks else "target.networks is empty")
            self.error(path + ("network",), f"KVM network {network!r} is not a value of target.networks ({known})")
        elif network is None and source is not None and source not in networks:
            self.error(path + ("source",), f"no mapping for VMware network {source!r} in target.networks; add it "
                                           "there or set this NIC's 'network'")
        mac = _str(nic.get("mac"))
        if mac is not None and _MAC.match(mac):
            norm = mac.lower().replace("-", ":")
            if int(norm[:2], 16) & 1:
                self.error(path + ("mac",), f"{mac} is a multicast MAC; expected a unicast address (first octet even)")
            elif norm == "00:00:00:00:00:00":
                self.error(path + ("mac",), "the all-zero MAC is not a valid NIC address")
            elif norm in macs:
                from scmt_cli.domain.plan.yamlsource import format_path

                self.error(path + ("mac",), f"MAC {mac} is also used by {format_path(macs[norm])}")
            else:
                macs[norm] = path
        self.check_ip(path, nic, direct, macs)

    def check_ip(self, path: PathT, nic: dict[str, Any], direct: bool, taken: dict[str, PathT]) -> None:
        """Address, gateway and DNS of one NIC; ``taken`` records addresses used elsewhere in the plan."""
        iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
        ip = _str(nic.get("ip"))
        if ip is not None:
            if "/" not in ip:
                self.error(path + ("ip",), f"expected an address with prefix length, like {ip}/24")
            else:
                try:
                    iface = ipaddress.ip_interface(ip.strip())
                except ValueError:
                    self.error(path + ("ip",), f"expected an address with prefix, like 10.0.0.10/24, got {ip!r}")
                else:
                    net = iface.network
                    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address) \
                            and iface.version == 4:
                        what = "network" if iface.ip == net.network_address else "broadcast"
                        self.error(path + ("ip",), f"{iface.ip} is the {what} address of {net}; expected a host "
                                                   "address")
                        iface = None
                if iface is not None:
                    key = f"ip:{iface.ip}"
                    if key in taken:
                        from scmt_cli.domain.plan.yamlsource import format_path

                        self.error(path + ("ip",), f"{iface.ip} is also assigned to {format_path(taken[key])}")
                    taken.setdefault(key, path)
            if direct:
                self.warn(path + ("ip",), "direct failover skips guest configuration: this static IP is not applied")
        gateway = _str(nic.get("gateway"))
        if gateway is not None:
            try:
                gw = ipaddress.ip_address(gateway.strip())
            except ValueError:
                self.error(path + ("gateway",), f"expected an IP address, got {gateway!r}")
            else:
                if ip is None:
                    self.error(path + ("gateway",), "a gateway needs a static 'ip' on the same NIC")
                elif iface is not None and (gw.version != iface.version or gw not in iface.network):
                    self.error(path + ("gateway",), f"gateway {gateway} is outside {iface.network}")
                elif iface is not None and gw == iface.ip:
                    self.error(path + ("gateway",), f"gateway {gateway} is the NIC's own address")
        for k, server in enumerate(_list(nic.get("dns"))):
            if isinstance(server, str):
                try:
                    ipaddress.ip_address(server.strip())
                except ValueError:
                    self.error(path + ("dns", k), f"expected an IP address, got {server!r}")

    def check_disk(self, path: PathT, disk: dict[str, Any], storage: dict[str, Any]) -> None:
        if "label" not in disk and "key" not in disk:
            self.error(path, "name the source disk with 'label' (e.g. 'Hard disk 2') or 'key' (e.g. 2001)")
        if disk.get("include") is False and "size" in disk:
            self.warn(path + ("size",), "size is ignored: this disk is excluded (include: false)", key=True)
        datastore = _str(disk.get("datastore"))
        if (datastore is not None and storage and "storage" not in disk and disk.get("include", True) is not False
                and datastore not in storage and "*" not in storage):
            self.error(path + ("datastore",), f"no mapping for datastore {datastore!r} in target.storage "
                                              "(add it, or a '*' fallback)")

    def check_agent(self, base: PathT, vm: dict[str, Any], method: str) -> None:
        agent = vm.get("agent")
        if method in AGENT_METHODS:
            if not isinstance(agent, dict) or "address" not in agent:
                where = base + ("agent",) if isinstance(agent, dict) else base
                self.error(where, f"method {method} needs agent.address (host:port of the scmt agent on the VM)")
        elif isinstance(agent, dict):
            self.warn(base + ("agent",), f"'agent' is ignored: method {method} does not use an agent", key=True)
        if not isinstance(agent, dict):
            return
        address = _str(agent.get("address"))
        if address is not None and split_address(address) is None:
            self.error(base + ("agent", "address"), f"expected host:port (port 1-65535), got {address!r}")
        if "token_env" in agent and "token_file" in agent:
            self.error(base + ("agent", "token_file"), "give either token_env or token_file, not both", key=True)
        if agent.get("plaintext") is True and ("fingerprint" in agent or "ca_file" in agent):
            self.error(base + ("agent", "plaintext"), "plaintext excludes fingerprint and ca_file", key=True)
        if method in AGENT_METHODS and "token_env" not in agent and "token_file" not in agent:
            self.warn(base + ("agent",), "no token_env/token_file: the agent connection is not authenticated",
                      key=True)


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


def is_host(text: str) -> bool:
    """True for a DNS host name or an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(_HOSTNAME.match(text))
    return True


def split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (host, port); None when malformed."""
    m = re.match(r"^\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<port>[0-9]{1,5})$|^(?P<host>[A-Za-z0-9_.-]+):(?P<p2>[0-9]{1,5})$",
                 address.strip())
    if not m:
        return None
    host = m.group("v6") or m.group("host")
    port = int(m.group("port") or m.group("p2"))
    if not 1 <= port <= 65535 or not is_host(host):
        return None
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return host, port


def check(located: Located, *, inventory: Inventory | None, now: dt.datetime) -> tuple[
        list[Problem], list[Problem], list[str]]:
    """Run every semantic rule; see the module docstring."""
    checker = Checker(located, inventory=inventory, now=now)
    checker.run()
    return checker.errors, checker.warnings, checker.notes
