"""The resolved model: defaults, precedence, units, paths, JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scmt_cli.domain.plan import load_plan, parse_plan
from scmt_cli.domain.plan.model import DEFAULT_CONCURRENCY
from tests.plan.conftest import NOW, REPO, base, dump, load


def test_built_in_defaults_are_applied():
    plan = load(base()).plan
    d = plan.defaults
    assert (d.method, d.sync_interval, d.bandwidth, d.compression) == ("agentless", 1800.0, None, "zstd")
    assert (d.concurrency, d.source_action, d.target_state, d.direct) == (DEFAULT_CONCURRENCY, "disconnect-network",
                                                                          "on", False)
    assert DEFAULT_CONCURRENCY == 2
    assert plan.target.disk_format == "qcow2"
    assert plan.name == "plan"


def test_precedence_vm_over_group_over_defaults():
    doc = base()
    doc["defaults"].update(source_action="shutdown", bandwidth="300Mbit", sync_interval="1h")
    doc["groups"] = [{"name": "cluster", "vms": ["web01", "db01"], "source_action": "none"}]
    doc["vms"][0].update(source_action="disconnect-network", bandwidth="unlimited", method="agent",
                         agent={"address": "web01:20000", "token_env": "T"})
    plan = load(doc).plan
    web, db = plan.effective("web01"), plan.effective(plan.vm("db01"))
    assert web.source_action == "disconnect-network" and db.source_action == "none"
    assert web.bandwidth is None and db.bandwidth == 300e6 / 8
    assert web.sync_interval == db.sync_interval == 3600.0
    assert web.method == "agent" and db.method == "agentless"
    assert web.group == db.group == "cluster"
    assert {"source_action", "bandwidth", "method"} <= web.overridden
    assert db.overridden == frozenset({"source_action"})
    assert plan.group_of("db01").name == "cluster"
    assert plan.group("cluster").vms == ("web01", "db01")
    assert web.uses_agent and web.agent.host == "web01" and web.agent.port == 20000


def test_vm_hooks_replace_the_default_phase_only():
    doc = base()
    doc["defaults"]["hooks"] = {"failover": {"pre": [["a"]]}, "rollback": {"post": [["b", "c"]], "timeout": "1m"}}
    doc["vms"][0]["hooks"] = {"failover": {"pre": [["x", "--y"]]}}
    plan = load(doc).plan
    hooks = plan.effective("web01").hooks
    assert hooks.failover.pre == (("x", "--y"),)
    assert hooks.failover.timeout == 300.0
    assert hooks.rollback.post == (("b", "c"),) and hooks.rollback.timeout == 60.0
    assert plan.effective("db01").hooks.failover.pre == (("a",),)


def test_lookups_of_unknown_names_raise_keyerror():
    plan = load(base()).plan
    with pytest.raises(KeyError):
        plan.vm("nope")
    with pytest.raises(KeyError):
        plan.group("nope")
    assert plan.group_of("web01") is None


def test_units_paths_and_normalisation(tmp_path):
    doc = base()
    del doc["source"]["password_env"]
    doc["source"].update(thumbprint="ab" * 32, password_file="secrets/vc.pass", url="https://vc.example.com:8443")
    doc["target"] = {"type": "dir", "path": "images", "storage": {"*": "pool"}, "networks": {"VM Network": "br0"}}
    doc["vms"][0].update(memory="1.5GiB", nics=[{"source": "VM Network", "mac": "52-54-00-AA-BB-CC"}],
                         disks=[{"key": 2000, "size": "100GiB"}])
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "wave.yaml"
    path.write_text(dump(doc))
    plan = load_plan(path, now=NOW).plan
    assert plan.source.thumbprint == ":".join(["AB"] * 32)
    assert plan.source.password_file == tmp_path / "sub" / "secrets" / "vc.pass"
    assert plan.source.url == "https://vc.example.com:8443/sdk"
    assert (plan.source.host, plan.source.port) == ("vc.example.com", 8443)
    assert plan.target.path == tmp_path / "sub" / "images"
    assert plan.target.storage_for("anything") == str(tmp_path / "sub" / "pool")
    assert plan.target.disk_format == "raw"
    vm = plan.vm("web01")
    assert vm.memory == int(1.5 * 1024**3)
    assert vm.nics[0].mac == "52:54:00:aa:bb:cc"
    assert vm.nics[0].network == "br0"
    assert vm.disks[0].size == 100 * 1024**3
    assert plan.name == "wave"


def test_to_dict_is_json_and_has_effective_settings():
    doc = base()
    doc["defaults"]["cutover_window"] = {"start": "2030-01-01T22:00:00+01:00", "end": "2030-01-02T02:00:00+01:00"}
    data = load(doc).plan.to_dict()
    text = json.dumps(data)
    assert "Infinity" not in text
    assert data["defaults"]["cutover_window"]["start"] == "2030-01-01T22:00:00+01:00"
    assert [e["name"] for e in data["effective"]] == ["web01", "db01"]
    assert data["target"]["networks"] == {"VM Network": "default", "App-VLAN20": "vlan20"}


def test_model_is_frozen():
    plan = load(base()).plan
    with pytest.raises(AttributeError):
        plan.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.target.networks["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize("method", ["managed", "agentless", "agent", "hot-backup"])
def test_starter_plans_validate_for_every_method(method):
    from scmt_cli.domain.plan.starter import starter_plan

    loaded = parse_plan(starter_plan(method), now=NOW)
    assert loaded.plan.effective("web01").method == method
    assert loaded.warnings == ()


def test_example_plans_cover_every_method_and_a_group():
    plans = {p.name: load_plan(p, now=NOW).plan for p in (REPO / "plans").glob("*.yaml")}
    assert {"managed.yaml", "agentless-p2p.yaml", "agent-p2p.yaml", "hot-backup.yaml", "cluster-group.yaml"} <= set(plans)
    methods = {plan.effective(vm).method for plan in plans.values() for vm in plan.vms}
    assert methods == {"managed", "agentless", "agent", "hot-backup"}
    cluster = plans["cluster-group.yaml"]
    assert cluster.groups and all(cluster.effective(v).source_action == "none" for v in cluster.groups[0].vms)


def test_plan_file_path_is_absolute():
    plan = load_plan(REPO / "plans" / "managed.yaml", now=NOW).plan
    assert plan.file.is_absolute() and plan.file == Path(REPO / "plans" / "managed.yaml").resolve()


def test_failover_units_keep_groups_together_in_plan_order():
    doc = base()
    doc["vms"] = [{"name": n} for n in ("a", "b", "c", "d")]
    doc["groups"] = [{"name": "g", "vms": ["d", "b"]}]
    assert load(doc).plan.failover_units() == (("a",), ("d", "b"), ("c",))


def test_disk_and_nic_helpers_answer_for_source_devices():
    doc = base()
    doc["vms"][0].update(
        disks=[{"key": 2001, "include": False}, {"label": "Hard disk 3", "size": "20GiB"}],
        nics=[{"label": "Network adapter 2", "network": "vlan20"}, {"source": "VM Network", "mac": "generate"}],
    )
    eff = load(doc).plan.effective("web01")
    gib = 1024**3
    assert eff.includes_disk(2000) and not eff.includes_disk(2001)
    assert eff.includes_disk(2002, "Hard disk 3")
    assert eff.target_disk_size(2002, 10 * gib, "Hard disk 3") == 20 * gib
    assert eff.target_disk_size(2002, 30 * gib, "Hard disk 3") == 30 * gib
    assert eff.target_disk_size(2000, 5 * gib) == 5 * gib
    assert eff.nic_spec("Network adapter 2").network == "vlan20"
    assert eff.nic_spec("Network adapter 1", "VM Network").mac == "generate"
    assert eff.nic_spec("Network adapter 9", "Other") is None


def test_managed_vms_always_shut_the_source_down_and_boot_the_target():
    doc = base()
    doc["defaults"].update(source_action="none", target_state="off")
    doc["vms"][0]["method"] = "managed"
    loaded = load(doc)
    web, db = loaded.plan.effective("web01"), loaded.plan.effective("db01")
    assert (web.source_action, web.target_state) == ("shutdown", "on")
    assert (db.source_action, db.target_state) == ("none", "off")
    assert loaded.warnings == ()  # the defaults are not meant for the managed VM alone
    doc["vms"][0]["source_action"] = "none"
    [warning] = load(doc).warnings
    assert warning.path == "vms[0].source_action" and "managed migration always uses source_action shutdown" in \
        warning.message


def test_managed_defaults_with_cutover_knobs_warn_once():
    doc = base()
    doc["defaults"].update(method="managed", source_action="disconnect-network")
    [warning] = load(doc).warnings
    assert warning.path == "defaults.source_action" and warning.line > 0
