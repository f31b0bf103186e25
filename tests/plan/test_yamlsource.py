"""The located YAML reader: positions, YAML 1.2 scalars, duplicate keys, hostile input."""

from __future__ import annotations

import pytest

from scmt_cli.domain.plan.yamlsource import YamlLoadError, format_path, load_located

TEXT = """\
version: 1
vms:
  - name: web01
    disks:
      - label: Hard disk 1
        size: 8GiB
  - name: db01
    disks: [{label: a}, {label: b, size: 1TiB}]
"""


def test_every_value_and_key_has_its_line_and_column():
    loc = load_located(TEXT, "p.yaml")
    assert loc.value_marks[("vms", 0, "disks", 0, "size")] == (6, 15)
    assert loc.key_marks[("vms", 0, "disks", 0, "size")] == (6, 9)
    assert loc.value_marks[("vms", 1, "disks", 1, "size")] == (8, 42)
    assert loc.value_marks[("vms", 1)] == (7, 5)


def test_problem_falls_back_to_the_nearest_ancestor():
    loc = load_located(TEXT, "p.yaml")
    p = loc.problem(("vms", 1, "disks", 0, "size"), "missing")
    assert (p.line, p.column, p.path) == (8, 13, "vms[1].disks[0].size")


def test_format_path_quotes_keys_that_are_not_identifiers():
    assert format_path(("vms", 3, "disks", 0, "size")) == "vms[3].disks[0].size"
    assert format_path(("target", "networks", "VM Network")) == 'target.networks["VM Network"]'
    assert format_path(()) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on", "on"),
        ("yes", "yes"),
        ("NO", "NO"),
        ("true", True),
        ("False", False),
        ("22:30", "22:30"),
        ("2030-01-18T22:00:00+01:00", "2030-01-18T22:00:00+01:00"),
        ("10", 10),
        ("010", "010"),
        ("007", "007"),
        ("0x1f", 31),
        ("1.5", 1.5),
        ("~", None),
        ("8GiB", "8GiB"),
        ("0e0", "0e0"),
        ("1e5", "1e5"),
        ("0o17", "0o17"),
        ("1.5e+3", 1500.0),
        ("1.5e3", "1.5e3"),
        ("-.5", -0.5),
    ],
)
def test_scalars_follow_the_yaml_1_2_core_schema(text, expected):
    assert load_located(f"v: {text}\n", "p").data == {"v": expected}


def test_duplicate_keys_are_reported_at_the_second_key():
    loc = load_located("a: 1\nb:\n  c: 1\n  c: 2\n", "p.yaml")
    assert loc.data == {"a": 1, "b": {"c": 1}}
    [p] = loc.problems
    assert (p.line, p.column, p.path) == (4, 3, "b.c")
    assert "duplicate key 'c'" in p.message and "line 3" in p.message


def test_non_duplicate_mapping_has_no_problems():
    assert load_located("a: 1\nb: {c: 1, d: 2}\n", "p").problems == []


@pytest.mark.parametrize(
    ("text", "line", "col", "words"),
    [
        ("a: [1, 2\n", 2, 1, "invalid YAML"),
        ("a: 1\n  b: 2\n", 2, 4, "invalid YAML"),
        ("a: 1\n---\nb: 2\n", 2, 1, "several YAML documents"),
        ("a: \x00\n", 1, 4, "invalid YAML"),
        ("a: *nowhere\n", 1, 4, "invalid YAML"),
    ],
)
def test_syntax_errors_carry_line_and_column(text, line, col, words):
    with pytest.raises(YamlLoadError) as info:
        load_located(text, "p.yaml")
    p = info.value.problems[-1]  # the failure; an unclosed bracket's opening comes first (next test)
    assert (p.line, p.column) == (line, col)
    assert words in p.message


@pytest.mark.parametrize(
    ("text", "opened", "what"),
    [
        ("version: 1\ntarget:\n  type: dir\nvms:\n  - name: [unclosed\n", (5, 11), "flow sequence ('[')"),
        ("a: {b: 1\n", (1, 4), "flow mapping ('{')"),
        ("vms:\n  - name: \"abc\n    x: 1\n", (2, 11), "quoted string"),
    ],
)
def test_unclosed_bracket_or_quote_names_the_line_where_it_was_opened_first(text, opened, what):
    with pytest.raises(YamlLoadError) as info:
        load_located(text, "p.yaml")
    first, last = info.value.problems
    assert (first.line, first.column) == opened
    assert first.message == f"invalid YAML: {what} opened here is never closed"
    assert (last.line, last.column) > (first.line, first.column)
    assert str(info.value).startswith(f"p.yaml:{opened[0]}:{opened[1]}: ")


def test_alias_bomb_is_refused_not_expanded():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(YamlLoadError) as info:
        load_located("\n".join(lines) + "\n", "p.yaml")
    assert "more than" in info.value.problems[0].message


def test_recursive_alias_is_refused():
    with pytest.raises(YamlLoadError) as info:
        load_located("a: &x [*x]\n", "p.yaml")
    assert "nesting" in info.value.problems[0].message


def test_unsupported_tags_and_complex_keys_are_problems():
    loc = load_located("a: !!binary aGVsbG8=\n? [k]\n: v\n", "p.yaml")
    texts = [p.message for p in loc.problems]
    assert any("unsupported YAML tag" in t for t in texts)
    assert any("mapping keys must be plain scalars" in t for t in texts)


@pytest.mark.parametrize("value", ["0e0", "1e5", "1.5e3", "08", "0o17", "010", "1_000", "22:30", "on", "null", "2030-01-01", "+1", "0x1F", "1."])
def test_strings_dumped_by_pyyaml_read_back_as_strings(value):
    import yaml

    assert load_located(yaml.safe_dump({"v": value}), "p").data == {"v": value}


def test_empty_document_gives_none():
    assert load_located("", "p").data is None
    assert load_located("# only a comment\n", "p").data is None
