"""Property tests: any JSON object without secret-looking keys round-trips through checkpoints and events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scmt_cli.state import StateStore, secret_key

_keys = st.text(min_size=1, max_size=12).filter(lambda k: not secret_key(k))
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20).filter(lambda s: "://" not in s)
)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4), max_leaves=20
)
_objects = st.dictionaries(_keys, _json, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_objects, key=st.text(min_size=1, max_size=30))
def test_checkpoint_roundtrip(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    with StateStore.open(tmp_path / "prop.db") as store:
        store.put_checkpoint(key, data)
        assert store.get_checkpoint(key) == data
        store.delete_checkpoint(key)
        assert store.get_checkpoint(key) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_objects)
def test_event_roundtrip(tmp_path: Path, data: dict[str, Any]) -> None:
    with StateStore.open(tmp_path / "prop.db") as store:
        event_id = store.append_event("prop", plan="p", **data)
        (event,) = store.events(since_id=event_id - 1)
        assert event.id == event_id and event.data == data and event.plan == "p"
