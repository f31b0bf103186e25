"""Schema violations: located, worded as what was expected, all reported at once."""

from __future__ import annotations

import json

import jsonschema
import pytest

from scmt_cli.domain.plan import schema
from tests.plan.conftest import base, load, messages, problems, variant

BROKEN = """\
version: 1
target:
  type: libvirt
  uri: qemu:///system
vms:
  - name: web01
  - name: db01
  - name: app01
  - name: big01
    cpus: four
    disks:
      - label: Hard disk 1
        size: 8
      - label: Hard disk 2
        sise: 8GiB
"""


def test_schema_is_a_valid_draft_2020_12_schema():
    doc = schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


def test_every_property_is_documented():
    """Users write plans by hand: every field in the schema carries a description."""
    undocumented = []

    def walk(node, path):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                target = sub
                if "$ref" in sub and "description" not in sub:
                    target = doc["$defs"][sub["$ref"].split("/")[-1]]
                if "description" not in target and name not in ("start", "end", "description"):
                    undocumented.append(f"{path}.{name}")
            for key, sub in node.items():
                walk(sub, f"{path}.{key}")

    doc = schema()
    walk(doc, "")
    assert undocumented == []


def test_several_errors_are_reported_at_once_with_positions_and_paths():
    lines = messages(BROKEN)
    assert "plan.yaml:10:11: vms[3].cpus: expected an integer, got 'four'" in lines
    assert any(line.startswith("plan.yaml:13:15: vms[3].disks[0].size: expected a size with a unit") for line in lines)
    assert "plan.yaml:15:9: vms[3].disks[1].sise: unknown key 'sise'; did you mean 'size'?" in lines
    assert "plan.yaml:1:1: method agentless reads disks through vCenter: set source.url, e.g. " \
        "https://vcenter.example.com/sdk" in lines
    assert len(lines) == 4


def test_problems_are_sorted_by_position():
    found = problems(BROKEN)
    assert [(p.line, p.column) for p in found] == sorted((p.line, p.column) for p in found)


def test_unknown_key_without_a_close_match_lists_the_allowed_keys():
    [line] = messages(variant(lambda d: d["vms"][0].update(colour="blue")))
    assert "unknown key 'colour'; expected one of: " in line
    assert "cpus" in line and "memory" in line


def test_unknown_key_in_defaults_suggests_the_close_one():
    [line] = messages(variant(lambda d: d["defaults"].update(concurency=4)))
    assert "defaults.concurency: unknown key 'concurency'; did you mean 'concurrency'?" in line


def test_enum_error_names_the_choices_and_suggests():
    [line] = messages(variant(lambda d: d["defaults"].update(method="agentles")))
    assert "expected one of managed, agentless, agent, hot-backup; got 'agentles' (did you mean 'agentless'?)" in line


def test_missing_required_keys():
    found = messages({"version": 1})
    assert any("missing required key 'target'" in m for m in found)
    assert any("missing required key 'vms'" in m for m in found)


def test_wrong_version():
    [line] = messages(variant(lambda d: d.update(version=2)))
    assert "version: expected 1" in line


def test_yaml_1_1_booleans_are_text_and_explained():
    doc = base()
    doc["defaults"]["direct"] = "yes"
    [line] = messages(doc)
    assert "defaults.direct: expected true or false, got 'yes'" in line


def test_target_state_on_is_accepted_unquoted():
    text = "version: 1\ntarget: {type: dir, path: /x}\ndefaults: {target_state: on, method: agent}\n" \
           "vms: [{name: a, agent: {address: 'a:1', token_env: T}}]\n"
    assert load(text).plan.defaults.target_state == "on"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["vms"][0].update(memory="8"), "vms[0].memory: expected a size with a unit"),
        (lambda d: d["vms"][0].update(memory="8 XB"), "vms[0].memory: unknown size unit 'XB'"),
        (lambda d: d["defaults"].update(sync_interval="soon"), "defaults.sync_interval: expected a duration"),
        (lambda d: d["defaults"].update(bandwidth="fast"), "defaults.bandwidth: expected a rate like 300Mbit"),
        (lambda d: d["defaults"].update(sync_interval="0s"), "defaults.sync_interval: must be greater than zero"),
        (lambda d: d["defaults"].update(concurrency=0), "defaults.concurrency: must be at least 1"),
        (lambda d: d["vms"][0].update(cpus=True), "vms[0].cpus: expected an integer, got boolean true"),
        (lambda d: d["vms"][0].update(nics="eth0"), "vms[0].nics: expected a list"),
        (lambda d: d["source"].update(thumbprint="abc"), "source.thumbprint: expected a SHA-256 fingerprint"),
        (lambda d: d["source"].update(password_env="not a name"), "source.password_env: expected the NAME of an"),
        (lambda d: d["vms"][0].update(name=""), "vms[0].name: must not be empty"),
        (lambda d: d.update(vms=[]), "vms: must list at least 1 item"),
        (lambda d: d["vms"][0].update(hooks={"failover": {"pre": ["systemctl stop x"]}}),
         "vms[0].hooks.failover.pre[0]: expected a command as an argv list"),
        (lambda d: d["vms"][0].update(hooks={"sync": {"pre": [[]]}}), "vms[0].hooks.sync.pre[0]: must list at least"),
    ],
)
def test_wrong_values_say_what_was_expected(mutate, expected):
    found = messages(variant(mutate))
    assert any(expected in m for m in found), found


def test_secret_like_values_are_not_echoed_in_type_errors():
    doc = base()
    doc["source"]["password_env"] = "Sup3r secret!"
    found = messages(doc)
    assert found and not any("Sup3r" in m for m in found)


def test_the_schema_alone_accepts_the_base_plan():
    jsonschema.Draft202012Validator(schema()).validate(json.loads(json.dumps(base())))
