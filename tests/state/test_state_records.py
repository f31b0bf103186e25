"""Plans, VMs, disks, generations, checkpoints and events: the store's records."""

from __future__ import annotations

from pathlib import Path

import pytest

from scmt_cli.errors import InvalidStateError, StateStoreError
from scmt_cli.state import StateStore, secret_key

from .conftest import DIGEST, FakeClock, raw_execute

#: The contract: every test here runs against both stores.
STORE_BACKENDS = ("sqlite", "postgresql")

# -- checkpoints ---------------------------------------------------------------------


def test_checkpoint_roundtrip_replace_delete(store: StateStore) -> None:
    assert store.get_checkpoint("copy:web01:2000") is None
    data = {"offset": 1 << 40, "done": [[0, 4096], [8192, 4096]], "nested": {"a": None, "b": 1.5, "c": True}}
    store.put_checkpoint("copy:web01:2000", data)
    assert store.get_checkpoint("copy:web01:2000") == data
    store.put_checkpoint("copy:web01:2000", {"offset": 7})
    assert store.get_checkpoint("copy:web01:2000") == {"offset": 7}
    store.put_checkpoint("copy:web01:2001", {"offset": 1})
    store.put_checkpoint("other", {})
    assert store.checkpoint_keys("copy:web01:") == ["copy:web01:2000", "copy:web01:2001"]
    store.delete_checkpoint("copy:web01:2000")
    store.delete_checkpoint("copy:web01:2000")  # no error when absent
    assert store.get_checkpoint("copy:web01:2000") is None
    assert store.checkpoint_keys() == ["copy:web01:2001", "other"]


def test_checkpoint_survives_reopen_and_converts_paths(db: Path) -> None:
    with StateStore.open(db) as store:
        store.put_checkpoint("k", {"manifest": Path("/var/m.json"), "disks": {2000, 2001}})
    with StateStore.open(db) as store:
        assert store.get_checkpoint("k") == {"manifest": "/var/m.json", "disks": [2000, 2001]}


def test_checkpoint_not_json_is_value_error(store: StateStore) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        store.put_checkpoint("k", {"obj": object()})
    with pytest.raises(ValueError, match="not JSON"):
        store.put_checkpoint("k", {"nan": float("nan")})
    assert store.get_checkpoint("k") is None


# -- secrets guard -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "vc_password",
        "Password",
        "apiToken",
        "session_cookie",
        "cookies",
        "client-secret",
        "api_key",
        "credentials",
        "Authorization",
        "sessionId",
        "passwd",
    ],
)
def test_secret_keys_refused(store: StateStore, key: str) -> None:
    assert secret_key(key)
    with pytest.raises(ValueError, match="secret"):
        store.put_checkpoint("k", {"fine": 1, "deep": [{key: "x"}]})
    with pytest.raises(ValueError, match="secret"):
        store.append_event("login", **{key: "x"})
    assert store.get_checkpoint("k") is None
    assert store.events() == []


@pytest.mark.parametrize("key", ["password_env", "password_file", "change_id", "tokenizer", "offset", "cookbook"])
def test_harmless_keys_allowed(store: StateStore, key: str) -> None:
    assert not secret_key(key)
    store.put_checkpoint("k", {key: "x"})
    assert store.get_checkpoint("k") == {key: "x"}


def test_url_with_password_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="password"):
        store.append_event("connect", url="https://admin:s3cret@vc.example/sdk")
    with pytest.raises(ValueError, match="password"):
        store.put_checkpoint("k", {"targets": ["nbd://u:pw@host:10809/x"]})
    store.append_event("connect", url="https://admin@vc.example/sdk")  # a user name alone is fine


def test_vm_error_is_redacted(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    vm = store.set_vm_state("p", "web01", "failed", error="cannot reach https://root:hunter2@vc/sdk")
    assert vm.error is not None and "hunter2" not in vm.error
    assert all("hunter2" not in str(e.data) for e in store.events())


# -- events --------------------------------------------------------------------------


def test_events_are_ordered_and_filtered(store: StateStore) -> None:
    ids = [
        store.append_event("a", plan="p1", vm="v1", n=1),
        store.append_event("b", plan="p1", vm="v2", n=2),
        store.append_event("a", plan="p2", vm="v1", n=3),
        store.append_event("c", n=4),
    ]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [e.data["n"] for e in store.events()] == [1, 2, 3, 4]
    assert [e.data["n"] for e in store.events(plan="p1")] == [1, 2]
    assert [e.data["n"] for e in store.events(vm="v1")] == [1, 3]
    assert [e.data["n"] for e in store.events(since_id=ids[1])] == [3, 4]
    assert [e.data["n"] for e in store.events(limit=2)] == [1, 2]
    assert [e.data["n"] for e in store.events(kinds=["a", "c"])] == [1, 3, 4]
    first = store.events()[0]
    assert (first.kind, first.plan, first.vm) == ("a", "p1", "v1")
    assert first.to_dict()["at"].endswith("Z")


def test_event_data_may_use_the_word_kind(store: StateStore) -> None:
    store.append_event("generation", kind="seed")
    assert store.events()[0].data == {"kind": "seed"}


def test_events_are_append_only(store: StateStore, db: Path) -> None:
    store.append_event("a", n=1)
    assert not [name for name in dir(store) if "event" in name and ("delete" in name or "update" in name)]
    for sql in ("UPDATE events SET kind = 'x'", "DELETE FROM events"):
        with pytest.raises(Exception, match="append-only") as info:  # sqlite3 or psycopg, outside scmt
            raw_execute(db, sql)
        assert type(info.value).__module__.split(".")[0] in ("sqlite3", "psycopg")
    assert [e.kind for e in store.events()] == ["a"]


def test_event_ids_keep_growing_after_reopen(db: Path) -> None:
    with StateStore.open(db) as store:
        first = store.append_event("a")
    with StateStore.open(db) as store:
        assert store.append_event("b") > first


# -- plans and VMs -------------------------------------------------------------------


def test_record_plan(cstore: StateStore, clock: FakeClock) -> None:
    cstore.record_plan("p", Path("/plans/p.yaml"), DIGEST)
    plan = cstore.get_plan("p")
    assert plan is not None and (plan.path, plan.digest, plan.recorded_at) == ("/plans/p.yaml", DIGEST, clock.now)
    cstore.record_plan("p", "/plans/p.yaml", DIGEST)  # unchanged: no new event
    cstore.record_plan("p", "/plans/p.yaml", "cd" * 32)
    assert [e.data["digest"] for e in cstore.events(kinds=["plan_recorded"])] == [DIGEST, "cd" * 32]
    assert [p.name for p in cstore.list_plans()] == ["p"]
    with pytest.raises(ValueError, match="64"):
        cstore.record_plan("q", "/q.yaml", "not-a-digest")


def test_vm_requires_recorded_plan(store: StateStore) -> None:
    with pytest.raises(StateStoreError, match="record_plan"):
        store.upsert_vm("nope", "web01")


def test_upsert_vm_creates_then_updates_given_fields(cstore: StateStore, clock: FakeClock) -> None:
    cstore.record_plan("p", "/p.yaml", DIGEST)
    vm = cstore.upsert_vm("p", "web01", method="agentless", source_id="vm-42")
    assert (vm.state, vm.method, vm.source_id, vm.updated_at) == ("planned", "agentless", "vm-42", clock.now)
    clock.advance(5)
    vm = cstore.upsert_vm("p", "web01", target="/srv/kvm/web01")
    assert (vm.method, vm.target, vm.updated_at) == ("agentless", "/srv/kvm/web01", clock.now)
    cstore.upsert_vm("p", "app01")
    assert [v.name for v in cstore.list_vms("p")] == ["app01", "web01"]
    assert cstore.get_vm("p", "missing") is None
    with pytest.raises(ValueError, match="unknown VM fields: colour"):
        cstore.upsert_vm("p", "web01", colour="red")


def test_set_vm_state_checks_expected(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    store.upsert_vm("p", "web01")
    vm = store.set_vm_state("p", "web01", "seeding", expected={"planned", "failed"})
    assert vm.state == "seeding"
    before = len(store.events())
    with pytest.raises(InvalidStateError) as info:
        store.set_vm_state("p", "web01", "cut-over", expected={"syncing"})
    assert info.value.exit_code == 42
    assert "seeding" in info.value.message and "syncing" in info.value.message
    vm_after = store.get_vm("p", "web01")
    assert vm_after is not None and vm_after.state == "seeding"
    assert len(store.events()) == before  # a refused change records nothing
    last = store.events(kinds=["vm_state"])[-1]
    assert last.data == {"from": "planned", "to": "seeding"}


def test_set_vm_state_unknown_vm(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    with pytest.raises(InvalidStateError, match="no recorded state"):
        store.set_vm_state("p", "ghost", "syncing", expected={"seeding"})
    assert store.get_vm("p", "ghost") is None
    vm = store.set_vm_state("p", "ghost", "planned")  # without expected: created
    assert vm.state == "planned"


def test_set_vm_state_error_set_and_cleared(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    assert store.set_vm_state("p", "v", "failed", error="disk full").error == "disk full"
    assert store.set_vm_state("p", "v", "seeding", expected={"failed"}).error is None


# -- disks and generations -------------------------------------------------------------


def test_disks(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    with pytest.raises(StateStoreError, match="upsert_vm"):
        store.upsert_disk("p", "web01", 2000, label="Hard disk 1")
    store.upsert_vm("p", "web01")
    store.upsert_disk("p", "web01", 2001, label="Hard disk 2", capacity_bytes=1 << 30)
    d = store.upsert_disk("p", "web01", 2000, label="Hard disk 1", capacity_bytes=1 << 34, target=Path("/t/d0.raw"))
    assert (d.key, d.target, d.change_id) == (2000, "/t/d0.raw", None)
    d = store.upsert_disk("p", "web01", 2000, change_id="52 3c/7", manifest_path="/t/d0.manifest")
    assert (d.label, d.capacity_bytes, d.change_id) == ("Hard disk 1", 1 << 34, "52 3c/7")
    assert [x.key for x in store.list_disks("p", "web01")] == [2000, 2001]
    with pytest.raises(ValueError, match="password"):
        store.upsert_disk("p", "web01", 2000, target="nbd://u:pw@h/x")


def test_generations(cstore: StateStore, clock: FakeClock) -> None:
    cstore.record_plan("p", "/p.yaml", DIGEST)
    cstore.upsert_vm("p", "web01")
    seed = cstore.begin_generation("p", "web01", "seed", {2000: "*"})
    clock.advance(60)
    cstore.finish_generation(seed, ok=True, stats={"bytes_read": 100, "bytes_written": 80, "bytes_zero": 20, "s": 1})
    inc = cstore.begin_generation("p", "web01", "incremental", {2000: "52 3c/7"})
    clock.advance(5)
    cstore.finish_generation(inc, ok=False, stats={"bytes_read": 5}, error="connection reset")
    gens = cstore.generations("p", "web01")
    assert [(g.id, g.kind, g.status, g.ok) for g in gens] == [
        (seed, "seed", "ok", True),
        (inc, "incremental", "failed", False),
    ]
    assert gens[0].change_ids == {"2000": "*"} and gens[1].change_ids == {"2000": "52 3c/7"}
    assert (gens[0].bytes_read, gens[0].bytes_written, gens[0].bytes_zero) == (100, 80, 20)
    assert gens[0].stats["s"] == 1 and gens[1].error == "connection reset"
    assert gens[0].finished_at == gens[0].started_at + 60
    last_ok = cstore.last_generation("p", "web01", status="ok")
    last = cstore.last_generation("p", "web01")
    assert last_ok is not None and last is not None and (last_ok.id, last.id) == (seed, inc)
    assert cstore.last_generation("p", "web01", status="running") is None
    vm = cstore.get_vm("p", "web01")
    assert vm is not None and (vm.last_sync_bytes, vm.last_sync_at) == (80, gens[0].finished_at)  # failed pass ignored
    with pytest.raises(InvalidStateError, match="already finished"):
        cstore.finish_generation(seed, ok=True, stats={})
    with pytest.raises(StateStoreError, match="no sync generation"):
        cstore.finish_generation(9999, ok=True, stats={})
    with pytest.raises(ValueError, match="kind"):
        cstore.begin_generation("p", "web01", "partial", {})
    with pytest.raises(ValueError, match="bytes_read"):
        cstore.finish_generation(inc, ok=True, stats={"bytes_read": -1})
    kinds = [e.kind for e in cstore.events(vm="web01")]
    assert kinds.count("generation_started") == 2 and kinds.count("generation_finished") == 2


def test_generation_requires_vm(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    with pytest.raises(StateStoreError, match="upsert_vm"):
        store.begin_generation("p", "nope", "seed", {})


# -- transactions ----------------------------------------------------------------------


def test_atomic_rolls_back_everything(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)

    def failing_step() -> None:
        with store.atomic():
            store.upsert_vm("p", "web01")
            store.put_checkpoint("k", {"v": 1})
            store.append_event("x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_step()
    assert store.get_vm("p", "web01") is None
    assert store.get_checkpoint("k") is None
    assert [e.kind for e in store.events()] == ["plan_recorded"]
    with store.atomic():
        store.upsert_vm("p", "web01")
        store.put_checkpoint("k", {"v": 1})
    assert store.get_vm("p", "web01") is not None and store.get_checkpoint("k") == {"v": 1}


def test_records_to_dict_use_iso_times(cstore: StateStore) -> None:
    cstore.record_plan("p", "/p.yaml", DIGEST)
    vm = cstore.upsert_vm("p", "web01")
    assert vm.to_dict()["updated_at"] == "2027-01-15T08:00:00.000Z"
    assert vm.to_dict()["last_sync_at"] is None


def test_upsert_vm_error_is_redacted(store: StateStore) -> None:
    store.record_plan("p", "/p.yaml", DIGEST)
    vm = store.upsert_vm("p", "web01", error="GET https://admin:pa55@vc/folder failed")
    assert vm.error is not None and "pa55" not in vm.error and "admin" in vm.error
