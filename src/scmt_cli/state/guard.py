"""Keep secrets and non-JSON data out of the state store.

The store never takes credentials.  :func:`to_json` refuses (``ValueError``,
a programming error, not a user error) any mapping key that looks like a
secret (``password``, ``vc_password``, ``apiToken``, ``session_cookie``...)
at any depth, and any string value that carries a password inside a URL
(``https://user:pw@host``).  Name CBT change ids ``change_id``, not
``*_token``: the guard does not know which tokens are harmless.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

from scmt_cli.errors import StateStoreError

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "secrets",
        "token",
        "tokens",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "authorization",
        "apikey",
        "privatekey",
        "sessionid",
    }
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# user:password@ in a URL; a password already redacted to "***" is fine.
_URL_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:(?!\*+@)[^/@\s]+@")


@functools.lru_cache(maxsize=4096)
def secret_key(key: str) -> bool:
    """True when ``key`` names a secret, judged word by word.

    ``vc_password``, ``apiToken``, ``Cookie``, ``api_key`` are secrets;
    ``password_env`` and ``password_file`` (references, not values) are not;
    neither is ``tokenizer``.  (Cached: a checkpoint repeats the same keys,
    thousands of chunk indexes, at every save.)
    """
    if key.isdigit():
        return False
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", _CAMEL.sub("_", key)) if w]
    if len(words) >= 2 and words[-1] in {"env", "file", "ref"}:
        return False
    pairs = {a + b for a, b in zip(words, words[1:], strict=False)}
    return any(w in _SECRET_WORDS for w in words) or bool(pairs & _SECRET_WORDS)


def check_no_secrets(data: Any, where: str, _path: str = "") -> None:
    """Raise ``ValueError`` naming the field if ``data`` holds something secret."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {_path}{key!r} is not a string")
            if secret_key(key):
                raise ValueError(f"{where}: field {_path}{key} looks like a secret; the state store stores no secrets")
            check_no_secrets(value, where, f"{_path}{key}.")
    elif isinstance(data, list | tuple | set | frozenset):
        for i, value in enumerate(data):
            check_no_secrets(value, where, f"{_path}[{i}].")
    elif isinstance(data, str) and "@" in data and _URL_PASSWORD.search(data):  # no '@', no user:password@
        raise ValueError(f"{where}: field {_path.rstrip('.') or '(value)'} holds a URL with a password")


def _default(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_json(data: Mapping[str, Any], where: str) -> str:
    """Check ``data`` for secrets and serialise it (compact, keys sorted).

    Paths, datetimes, enums and sets are converted; anything else that JSON
    cannot hold raises ``ValueError``.
    """
    check_no_secrets(data, where)
    try:
        return json.dumps(data, default=_default, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: data is not JSON-serialisable: {exc}") from None


def from_json(text: str) -> dict[str, Any]:
    """Parse a JSON object read back from the store; damage is a :class:`StateStoreError`."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StateStoreError(f"state store holds malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StateStoreError("state store holds JSON that is not an object")
    return value
