"""Clear-text secrets are rejected, and never echoed."""

from __future__ import annotations

import pytest

from tests.plan.conftest import base, load, messages, problems, variant

SECRET = "Hunter2-not-for-logs"


@pytest.mark.parametrize(
    ("mutate", "path", "advice"),
    [
        (lambda d: d["source"].update(password=SECRET), "source.password", "password_env"),
        (lambda d: d["source"].update(passwd=SECRET), "source.passwd", "password_file"),
        (lambda d: d["vms"][0].update(agent={"address": "a:1", "token": SECRET}), "vms[0].agent.token", "token_env"),
        (lambda d: d["defaults"].update(api_key=SECRET), "defaults.api_key", "api_key_env"),
        (lambda d: d.update(secret=SECRET), "secret", "secret_file"),
        (lambda d: d["source"].update(url=f"https://admin:{SECRET}@vc.example.com/sdk"), "source.url",
         "password_env"),
        (lambda d: d["target"].update(uri=f"qemu+ssh://root:{SECRET}@kvm/system"), "target.uri", "password_env"),
        (lambda d: d["vms"][0].update(hooks={"sync": {"pre": [["tool", f"--password={SECRET}"]]}}),
         "vms[0].hooks.sync.pre[0][1]", "environment variable"),
    ],
)
def test_clear_text_secret_is_rejected_without_echo(mutate, path, advice):
    found = problems(variant(mutate))
    assert not any(SECRET in p.format() for p in found)
    mine = [p for p in found if p.path == path]
    assert mine, [p.format() for p in found]
    assert advice in mine[0].message
    assert mine[0].line > 0


def test_secret_is_reported_once_not_also_as_an_unknown_key():
    found = messages(variant(lambda d: d["source"].update(password=SECRET)))
    assert len([m for m in found if "source.password" in m]) == 1


def test_secret_with_a_non_string_value_is_still_rejected():
    found = problems(variant(lambda d: d["source"].update(password=12345678)))
    assert any(p.path == "source.password" for p in found)
    assert not any("12345678" in p.format() for p in found)


def test_references_are_accepted():
    doc = base()
    doc["vms"][0].update(method="agent", agent={"address": "web01:20000", "token_file": "/etc/tok"})
    assert load(doc).plan.vm("web01").agent.token_file.name == "tok"


def test_network_names_that_look_like_secrets_are_data_not_fields():
    doc = base()
    doc["target"]["networks"]["token-ring"] = "legacy"
    load(doc)


def test_cli_error_output_never_contains_the_secret(tmp_path):
    from tests.plan.conftest import dump, run_cli

    doc = base()
    doc["source"]["password"] = SECRET
    doc["source"]["url"] = f"https://u:{SECRET}@vc/sdk"
    plan = tmp_path / "p.yaml"
    plan.write_text(dump(doc))
    for argv in (["plan", "validate", str(plan)], ["--json", "plan", "validate", str(plan)],
                 ["--log-json", "plan", "show", str(plan)]):
        code, out, err = run_cli(*argv)
        assert code == 2
        assert SECRET not in out + err
