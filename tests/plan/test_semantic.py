"""Each semantic rule: one plan that triggers it, one that does not."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.plan.conftest import NOW, base, load, messages, variant


def _nic(**kw):
    return lambda d: d["vms"][0].update(nics=[kw])


def _group(*groups):
    return lambda d: d.update(groups=list(groups))


def _window(start, end):
    return lambda d: d["defaults"].update(cutover_window={"start": start, "end": end})


def _vm(**kw):
    return lambda d: d["vms"][0].update(**kw)


def _agent(**kw):
    return lambda d: d["vms"][0].update(method="agent", agent=kw)


RULES = [
    # (id, breaking mutation, expected message fragment, passing mutation)
    ("unique-vm-names", lambda d: d["vms"][1].update(name="web01"), "vms[1].name: duplicate VM name 'web01'",
     lambda d: d["vms"][1].update(name="web02")),
    ("unique-target-names", lambda d: d["vms"][1].update(target_name="web01"),
     "vms[1].target_name: target name 'web01' is already used", lambda d: d["vms"][1].update(target_name="db01-kvm")),
    ("unique-group-names", _group({"name": "g", "vms": ["web01"]}, {"name": "g", "vms": ["db01"]}),
     "groups[1].name: duplicate group name 'g'", _group({"name": "g", "vms": ["web01"]}, {"name": "h", "vms": ["db01"]})),
    ("group-members-exist", _group({"name": "g", "vms": ["web1"]}),
     "groups[0].vms[0]: group member 'web1' is not a VM listed under 'vms'; did you mean 'web01'?",
     _group({"name": "g", "vms": ["web01"]})),
    ("vm-in-one-group", _group({"name": "g", "vms": ["web01"]}, {"name": "h", "vms": ["web01"]}),
     "groups[1].vms[0]: VM 'web01' is already in group 'g'",
     _group({"name": "g", "vms": ["web01"]}, {"name": "h", "vms": ["db01"]})),
    ("nic-network-is-mapped", _nic(label="Network adapter 1", network="vlan30"),
     "vms[0].nics[0].network: KVM network 'vlan30' is not a value of target.networks",
     _nic(label="Network adapter 1", network="vlan20")),
    ("nic-source-is-mapped", _nic(source="DMZ"), "vms[0].nics[0].source: no mapping for VMware network 'DMZ'",
     _nic(source="App-VLAN20")),
    ("nic-is-named", _nic(network="vlan20"), "vms[0].nics[0]: name the source NIC with 'label'",
     _nic(label="Network adapter 1", network="vlan20")),
    ("nic-ip-has-prefix", _nic(label="n", ip="10.0.0.5"), "vms[0].nics[0].ip: expected an address with prefix length",
     _nic(label="n", ip="10.0.0.5/24")),
    ("gateway-in-network", _nic(label="n", ip="10.0.0.5/24", gateway="10.0.1.1"),
     "vms[0].nics[0].gateway: gateway 10.0.1.1 is outside 10.0.0.0/24",
     _nic(label="n", ip="10.0.0.5/24", gateway="10.0.0.1")),
    ("ip-is-a-host-address", _nic(label="n", ip="10.0.0.0/24"), "10.0.0.0 is the network address of 10.0.0.0/24",
     _nic(label="n", ip="10.0.0.1/31")),
    ("ip-is-not-broadcast", _nic(label="n", ip="10.0.0.255/24"), "is the broadcast address",
     _nic(label="n", ip="10.0.0.254/24")),
    ("gateway-is-not-self", _nic(label="n", ip="10.0.0.5/24", gateway="10.0.0.5"), "is the NIC's own address",
     _nic(label="n", ip="10.0.0.5/24", gateway="10.0.0.254")),
    ("gateway-needs-ip", _nic(label="n", gateway="10.0.0.1"), "a gateway needs a static 'ip'",
     _nic(label="n", ip="fd00::5/64", gateway="fd00::1")),
    ("dns-are-addresses", _nic(label="n", ip="10.0.0.5/24", dns=["ns1"]), "vms[0].nics[0].dns[0]: expected an IP",
     _nic(label="n", ip="10.0.0.5/24", dns=["10.0.0.2", "2001:db8::53"])),
    ("mac-unicast", _nic(label="n", mac="01:00:5e:00:00:01"), "is a multicast MAC",
     _nic(label="n", mac="52:54:00:00:00:01")),
    ("mac-unique", lambda d: [vm.update(nics=[{"label": "n", "mac": "52:54:00:00:00:01"}]) for vm in d["vms"]],
     "MAC 52:54:00:00:00:01 is also used by vms[0].nics[0]",
     lambda d: [vm.update(nics=[{"label": "n", "mac": "generate"}]) for vm in d["vms"]]),
    ("ip-unique", lambda d: [vm.update(nics=[{"label": "n", "ip": "10.0.0.5/24"}]) for vm in d["vms"]],
     "vms[1].nics[0].ip: 10.0.0.5 is also assigned to vms[0].nics[0]",
     lambda d: [vm.update(nics=[{"label": "n", "ip": f"10.0.0.{i + 5}/24"}]) for i, vm in enumerate(d["vms"])]),
    ("disk-is-named", _vm(disks=[{"size": "10GiB"}]), "vms[0].disks[0]: name the source disk",
     _vm(disks=[{"key": 2000, "size": "10GiB"}])),
    ("disk-listed-once", _vm(disks=[{"label": "a"}, {"label": "a"}]), "vms[0].disks[1].label: disk label 'a' is listed",
     _vm(disks=[{"label": "a"}, {"label": "b"}])),
    ("datastore-is-mapped", _vm(disks=[{"label": "a", "datastore": "ds9"}]), "no mapping for datastore 'ds9'",
     _vm(disks=[{"label": "a", "datastore": "ds1"}])),
    ("window-in-future", _window("2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
     "defaults.cutover_window.start: cutover window start 2020-01-01T00:00:00+00:00 is in the past",
     _window("2030-01-01T00:00:00Z", "2030-01-01T04:00:00Z")),
    ("window-end-after-start", _window("2030-01-01T04:00:00Z", "2030-01-01T03:00:00+00:00"),
     "defaults.cutover_window.end: cutover window end must be after its start",
     _window("2030-01-01T04:00:00Z", "2030-01-01T06:00:00+01:00")),
    ("window-has-timezone", _window("2030-01-01T04:00:00", "2030-01-01T05:00:00Z"),
     "'2030-01-01T04:00:00' has no time zone", _window("2030-01-01T04:00:00-05:00", "2030-01-02T05:00:00Z")),
    ("window-is-iso", _window("next saturday", "2030-01-01T05:00:00Z"), "expected an ISO-8601 date-time",
     _window("2029-12-31T23:00:00Z", "2030-01-01T05:00:00Z")),
    ("agent-needs-address", lambda d: d["vms"][0].update(method="hot-backup"),
     "vms[0]: method hot-backup needs agent.address", _agent(address="web01:20000", token_env="T")),
    ("agent-address-format", _agent(address="web01", token_env="T"), "vms[0].agent.address: expected host:port",
     _agent(address="[2001:db8::5]:20000", token_env="T")),
    ("agent-port-range", _agent(address="web01:70000", token_env="T"), "expected host:port (port 1-65535)",
     _agent(address="web01:1", token_env="T")),
    ("one-token-reference", _agent(address="w:1", token_env="T", token_file="/t"),
     "give either token_env or token_file, not both", _agent(address="w:1", token_file="/t")),
    ("vcenter-methods-need-url", lambda d: d.pop("source"), "method agentless reads disks through vCenter",
     lambda d: (d.pop("source"), d["defaults"].update(method="agent"),
                [vm.update(agent={"address": "x:1", "token_env": "T"}) for vm in d["vms"]])),
    ("url-is-https-sdk", lambda d: d["source"].update(url="http://vc/sdk"), "expected an https:// URL",
     lambda d: d["source"].update(url="https://vc:8443/sdk")),
    ("url-path-is-sdk", lambda d: d["source"].update(url="https://vc/ui/"), "expected the SDK endpoint",
     lambda d: d["source"].update(url="https://vc")),
    ("url-without-user", lambda d: d["source"].update(url="https://admin@vc/sdk"), "put it in source.username",
     lambda d: d["source"].update(url="https://vc.example.com/sdk/")),
    ("url-needs-username", lambda d: d["source"].pop("username"), "source: missing 'username', the vCenter user",
     lambda d: d["source"].update(username="x")),
    ("url-needs-password-reference", lambda d: d["source"].pop("password_env"), "source: missing the vCenter password reference",
     lambda d: (d["source"].pop("password_env"), d["source"].update(password_file="vc.pass"))),
    ("one-password-reference", lambda d: d["source"].update(password_file="/p"),
     "give either password_env or password_file", lambda d: d["source"].update(datacenter="DC1")),
    ("ca-or-thumbprint", lambda d: d["source"].update(ca_file="/ca.pem", thumbprint="ab" * 32),
     "give either ca_file or thumbprint", lambda d: d["source"].update(thumbprint=":".join(["AB"] * 32))),
    ("insecure-contradicts-pinning", lambda d: d["source"].update(insecure=True, ca_file="/ca.pem"),
     "insecure: true contradicts", lambda d: d["source"].update(insecure=False, ca_file="/ca.pem")),
    ("migration-host-is-a-host", lambda d: d["target"].update(migration_host="https://mh:443"),
     "target.migration_host: expected a host name or IP address",
     lambda d: d["target"].update(migration_host="mh-01.example.com")),
    ("migration-host-ipv6", lambda d: d["target"].update(migration_host="[fd00::5]"), "expected a host name or IP",
     lambda d: d["target"].update(migration_host="fd00::5")),
    ("libvirt-needs-uri", lambda d: d["target"].pop("uri"), "type: libvirt needs 'uri'",
     lambda d: d["target"].update(uri="qemu+ssh://kvm01/system")),
    ("dir-needs-path", lambda d: d["target"].update(type="dir", uri=None) or d["target"].pop("uri"),
     "type: dir needs 'path'", lambda d: (d["target"].pop("uri"), d["target"].update(type="dir", path="/srv/img"))),
    ("dir-has-no-uri", lambda d: d["target"].update(type="dir", path="/x"), "'uri' is for type: libvirt",
     lambda d: (d["target"].pop("uri"), d["target"].update(type="dir", path="/x"))),
]


@pytest.mark.parametrize(("rule", "breaks", "expected", "fixes"), RULES, ids=[r[0] for r in RULES])
def test_rule_triggers(rule, breaks, expected, fixes):
    found = messages(variant(breaks))
    assert any(expected in m for m in found), found


@pytest.mark.parametrize(("rule", "breaks", "expected", "fixes"), RULES, ids=[r[0] for r in RULES])
def test_rule_does_not_trigger_on_a_good_plan(rule, breaks, expected, fixes):
    load(variant(fixes))


def test_injected_clock_decides_what_the_future_is():
    doc = variant(_window("2027-01-01T00:00:00Z", "2027-01-01T04:00:00Z"))
    load(doc, now=NOW)
    later = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
    assert any("is in the past" in m for m in messages(doc, now=later))


def test_window_on_a_vm_is_checked_too():
    doc = variant(_vm(cutover_window={"start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z"}))
    assert any(m.startswith("plan.yaml:") and "vms[0].cutover_window.start" in m for m in messages(doc))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["source"].update(insecure=True), "TLS verification of vCenter is disabled"),
        (lambda d: d["vms"][0].update(agent={"address": "w:1"}), "'agent' is ignored: method agentless"),
        (_agent(address="w:1"), "no token_env/token_file: the agent connection is not authenticated"),
        (lambda d: (d["vms"][0].update(method="managed"), d.update(groups=[{"name": "g", "vms": ["web01"]}])),
         "uses method managed, which cuts over on its own"),
        (lambda d: (d["defaults"].update(direct=True), d["vms"][0].update(nics=[{"label": "n", "ip": "10.0.0.5/24"}])),
         "direct failover skips guest configuration"),
        (_vm(disks=[{"label": "a", "include": False, "size": "10GiB"}]), "size is ignored: this disk is excluded"),
    ],
)
def test_warnings_do_not_invalidate_the_plan(mutate, expected):
    loaded = load(variant(mutate))
    assert any(expected in w.message for w in loaded.warnings), loaded.warnings
    assert all(w.line > 0 for w in loaded.warnings)


def test_a_clean_plan_has_no_warnings_and_says_sizing_was_not_checked():
    loaded = load(base())
    assert loaded.warnings == ()
    assert any("not checked against the source" in n for n in loaded.notes)
