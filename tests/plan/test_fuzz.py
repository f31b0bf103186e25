"""Hypothesis: generated plans, valid or broken, never produce a traceback."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scmt_cli.domain.plan import LoadedPlan, parse_plan
from scmt_cli.errors import PlanError
from tests.plan.conftest import NOW, run_cli

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["on", "off", "yes", "8GiB", "30m", "300Mbit", "unlimited", "2030-01-01T00:00:00Z", "22:30",
                     "keep", "generate", "52:54:00:00:00:01", "10.0.0.1/24", "https://u:p@h/sdk", "*", "~", "<<"]),
)
anything = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                        max_leaves=12)


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    vm_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    method = draw(st.sampled_from(["managed", "agentless", "agent", "hot-backup"]))
    vms = []
    for index, name in enumerate(vm_names):
        vm: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            vm["cpus"] = draw(st.integers(min_value=1, max_value=64))
        if draw(st.booleans()):
            vm["memory"] = f"{draw(st.integers(min_value=1, max_value=512))}GiB"
        if method in ("agent", "hot-backup") or draw(st.booleans()):
            vm["agent"] = {"address": f"vm{index}.example.com:{draw(st.integers(1, 65535))}", "token_env": "TOKEN"}
        if draw(st.booleans()):
            vm["nics"] = [{"label": "Network adapter 1", "network": "default",
                           "mac": draw(st.sampled_from(["keep", "generate"]))}]
        if draw(st.booleans()):
            vm["disks"] = [{"key": 2000, "size": f"{draw(st.integers(1, 4096))}GiB",
                            "include": draw(st.booleans())}]
        vms.append(vm)
    doc: dict[str, Any] = {
        "version": 1,
        "source": {"url": "https://vc.example.com/sdk", "username": "u", "password_env": "VC_PASSWORD"},
        "target": {"type": "libvirt", "uri": "qemu:///system", "networks": {"VM Network": "default"}},
        "defaults": {"method": method, "sync_interval": draw(st.sampled_from(["30m", "1h", 90])),
                     "bandwidth": draw(st.sampled_from(["300Mbit", "unlimited", "50MB/s"]))},
        "vms": vms,
    }
    if len(vm_names) > 1 and draw(st.booleans()):
        doc["groups"] = [{"name": "g", "vms": vm_names[:2], "source_action": "none"}]
    return doc


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


@st.composite
def broken_plans(draw: st.DrawFn) -> dict[str, Any] | Any:
    doc = copy.deepcopy(draw(plans()))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            return draw(anything)
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(anything)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(anything)
    return doc


def _check(text: str) -> None:
    try:
        loaded = parse_plan(text, file="fuzz.yaml", now=NOW)
    except PlanError as err:
        found = err.problems
    else:
        found = None
    if found is not None:
        assert found
        assert all(problem.format().startswith("fuzz.yaml") for problem in found)
        return
    assert isinstance(loaded, LoadedPlan)
    loaded.plan.to_dict()
    for vm in loaded.plan.vms:
        loaded.plan.effective(vm)


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@SETTINGS
@given(plans())
def test_generated_valid_plans_load(doc):
    loaded = parse_plan(_dump(doc), file="fuzz.yaml", now=NOW)
    assert [vm.name for vm in loaded.plan.vms] == [vm["name"] for vm in doc["vms"]]


@SETTINGS
@given(broken_plans())
def test_broken_plans_give_plan_errors_only(doc):
    _check(_dump(doc))


@SETTINGS
@given(st.text(max_size=300))
def test_garbage_text_gives_plan_errors_only(text):
    _check(text)


yaml_tokens = st.sampled_from(["version:", " 1", "\n", "  ", "- ", "vms:", "name:", "{", "}", "[", "]", ",", ":",
                               "&a ", "*a", "!!str ", "!x ", "'", '"', "#", "? ", "|", ">", "---", "\t", "target:",
                               "type: dir", "path: /x", "cpus:", "8GiB", "<<: *a", "\\"])


@SETTINGS
@given(st.lists(yaml_tokens, max_size=60).map("".join))
def test_yaml_shaped_garbage_gives_plan_errors_only(text):
    _check(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(plans(), broken_plans()), st.booleans())
def test_cli_never_shows_a_traceback(doc, as_json):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        path.write_text(_dump(doc), encoding="utf-8")
        for argv in (["plan", "validate", str(path)], ["plan", "show", str(path)]):
            code, out, err = run_cli(*(["--json"] if as_json else []), *argv)
            assert code in (0, 1, 2), out + err
            assert "Traceback" not in out + err
            assert "internal error" not in err
