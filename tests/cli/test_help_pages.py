"""Issue 16: the help pages say what the code does (``scmt help json``, ``scmt help durations``), and §1's completion."""

from __future__ import annotations

import re
from typing import Any

import pytest

from scmt_cli.cli.docschema import DOCUMENTS, RAW, document_schema
from scmt_cli.cli.main import main

from .cliparse import parse_problem
from .test_help_contract import _complete


def _page(capsys: pytest.CaptureFixture[str], topic: str) -> str:
    assert main(["help", topic]) == 0
    return capsys.readouterr().out


def _objects(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a document may match (through a top-level $ref or anyOf)."""
    defs = schema.get("$defs", {})
    if "$ref" in schema:
        return _objects({**defs[schema["$ref"].rsplit("/", 1)[1]], "$defs": defs})
    if "anyOf" in schema:
        return [o for s in schema["anyOf"] for o in _objects({**s, "$defs": defs})]
    return [schema]


@pytest.mark.parametrize("name", [d for d in DOCUMENTS if d not in RAW])
def test_every_document_has_what_help_json_promises(capsys: pytest.CaptureFixture[str], name: str) -> None:
    page = _page(capsys, "json")
    for key in ("schema_version", "exit_code", "warnings"):
        assert key in page
        for obj in _objects(document_schema(name)):
            assert key in obj["required"], f"{name}: {key} not required"
    assert "'scmt schema COMMAND'" in page and parse_problem("scmt schema assess") is None


def test_help_json_names_vm_as_the_per_vm_key_and_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert '"vm" is' in " ".join(_page(capsys, "json").split())
    for name in ("assess", "plan estimate", "sync", "status", "rollback", "failover", "migrate", "finalize"):
        schema = document_schema(name)
        for obj in _objects(schema):
            if "vms" not in obj.get("properties", {}):
                continue  # failover's other document (--test) is about one VM: "vm" at the top
            item = obj["properties"]["vms"]["items"]
            item = _objects({**item, "$defs": schema.get("$defs", {})})[0]
            assert "vm" in item["required"] and "name" not in item["properties"], name


def test_every_duration_option_help_names_takes_a_unit_and_a_bare_number(capsys: pytest.CaptureFixture[str]) -> None:
    page = _page(capsys, "durations")
    lines = {
        "sync --every": "scmt sync p.yaml --every {}",
        "status --interval": "scmt status p.yaml --interval {}",
        "assess --timeout": "scmt assess --timeout {}",
        "--downtime": "scmt assess --downtime {}",
        "copy\n--checkpoint-every": "scmt copy a b --checkpoint-every {}",
        "boot --timeout": "scmt boot p.yaml --vm w --timeout {}",
        "--stall": "scmt boot p.yaml --vm w --stall {}",
        "--v2v-timeout": "scmt failover p.yaml --v2v-timeout {}",
        "plan estimate --switch": "scmt plan estimate --switch {}",
        "--sync-interval": "scmt plan estimate --sync-interval {}",
    }
    flat = " ".join(page.split())
    for named, line in lines.items():
        assert " ".join(named.split()) in flat, named
        for value in ("1h30m", "90", "2m"):
            assert parse_problem(line.format(value)) is None, (line, value)
    # the values that take a duration after parsing (not only a word): a bad one is refused while parsing
    assert parse_problem("scmt status p.yaml --interval soon") is not None
    assert re.search(r"bare number means\s+seconds", page)


def test_help_json_says_what_long_runs_and_previews_print(capsys: pytest.CaptureFixture[str]) -> None:
    """What tests/cli/test_long_runs.py checks the CLI does: JSON lines per round, the documents named."""
    flat = " ".join(_page(capsys, "json").split())
    assert "'sync --every' and 'sync --until-ready' print JSON lines" in flat
    assert "a 'sync' document per round as the round ends" in flat
    for document in ("'preview'", "'status overview'", "'events'"):
        assert document in flat
    assert "bytes read from the source per second of copying" in flat


def test_completion_of_target_state_and_target(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _complete(monkeypatch, capsys, "scmt failover p.yaml --target-state o") == ["on", "off"]
    assert _complete(monkeypatch, capsys, "scmt plan init p.yaml --target l") == ["libvirt"]
    assert _complete(monkeypatch, capsys, "scmt plan init p.yaml --target ") == ["dir", "libvirt"]
