"""Where a vCenter connection's settings come from, resolved in one pure function.

Precedence, per value, highest first:

1. command-line values (``--vcenter``, ``--vcenter-user``, ``--vcenter-password-file``,
   ``--vcenter-thumbprint``, ``--insecure``);
2. the plan's ``source`` section (``vcenter``/``url``, ``user``, ``password_env``,
   ``password_file``, ``ca_file``, ``thumbprint``, ``insecure``);
3. ``SCMT_VCENTER_PASSWORD`` for the password;
4. govc's variables: ``GOVC_URL`` (may carry ``user:password@``), ``GOVC_USERNAME``,
   ``GOVC_PASSWORD``, ``GOVC_INSECURE``, ``GOVC_TLS_CA_CERTS``, ``GOVC_DATACENTER``.

``datacenter`` (the plan's ``source.datacenter`` or ``GOVC_DATACENTER``) limits
what is read to that datacenter, as govc does.

TLS is verified unless ``insecure`` is set explicitly; a pinned thumbprint
replaces CA verification.  The password never appears in ``repr`` or messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from scmt_cli.errors import ConfigError, UsageError
from scmt_cli.secretfile import read_secret_file
from scmt_cli.vsphere.tls import normalize_thumbprint

PASSWORD_ENV = "SCMT_VCENTER_PASSWORD"  # noqa: S105 - a variable name
_TRUE = ("1", "true", "yes", "on")
_SOURCE_KEYS = ("vcenter", "url", "user", "password_env", "password_file", "ca_file", "thumbprint", "insecure",
                "datacenter")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a vCenter session.  ``origin`` says where each part came from."""

    host: str
    port: int = 443
    path: str = "/sdk"
    user: str = ""
    password: str = field(default="", repr=False, compare=False)
    ca_file: str | None = None
    thumbprint: str | None = None
    insecure: bool = False
    origin: str = ""
    datacenter: str | None = None

    @property
    def url(self) -> str:
        """``https://host:port/sdk`` (never with credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{self.path}"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"ConnectionSettings(url={self.url!r}, user={self.user!r}, password=***, ca_file={self.ca_file!r}, "
            f"thumbprint={self.thumbprint!r}, insecure={self.insecure}, datacenter={self.datacenter!r})"
        )

    __str__ = __repr__


def _split_url(text: str, what: str) -> tuple[str, int, str, str | None, str | None]:
    """(host, port, path, user, password) of a vCenter URL or bare host."""
    raw = text.strip()
    if "://" not in raw:
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port or 443
    except ValueError:
        raise UsageError(f"{what}: not a vCenter URL (expected https://host[:port]/sdk)") from None
    if parts.scheme not in ("https", "http"):
        raise UsageError(f"{what}: scheme {parts.scheme!r} is not supported (use https://)")
    if parts.scheme == "http":
        raise UsageError(f"{what}: plain http:// is refused; vCenter speaks https")
    if not parts.hostname:
        raise UsageError(f"{what}: no host name")
    path = parts.path.rstrip("/") or "/sdk"
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, path, user, password


def _read_password_file(path: str, base_dir: Path | None, what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    try:
        text = read_secret_file(p, what, "password file").decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: password file {p} is not UTF-8 text") from None
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"{what}: password file {p} is empty")
    return password


def resolve_settings(
    *,
    source: Mapping[str, Any] | None = None,
    url: str | None = None,
    user: str | None = None,
    password_file: str | None = None,
    thumbprint: str | None = None,
    ca_file: str | None = None,
    insecure: bool | None = None,
    datacenter: str | None = None,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> ConnectionSettings:
    """Merge command-line values, a plan's ``source`` mapping and the environment (see module doc).

    Pure apart from reading a password file.  Raises ConfigError (5) for missing
    or unreadable credentials and UsageError (2) for a malformed URL.
    """
    env = dict(env or {})
    src = dict(source or {})
    unknown = sorted(set(src) - set(_SOURCE_KEYS) - {"type", "kind", "method", "vddk_libdir"})
    if unknown:
        raise ConfigError(f"source: unknown connection keys {', '.join(unknown)} (expected {', '.join(_SOURCE_KEYS)})")
    origins: list[str] = []

    raw_url = url or src.get("vcenter") or src.get("url")
    url_origin = "command line" if url else "plan" if raw_url else ""
    if not raw_url and env.get("GOVC_URL"):
        raw_url, url_origin = env["GOVC_URL"], "GOVC_URL"
    if not raw_url:
        raise ConfigError(
            "no vCenter given",
            hint="pass --vcenter https://HOST/sdk, set source.url in the plan, or export GOVC_URL",
        )
    host, port, path, url_user, url_password = _split_url(str(raw_url), url_origin)
    origins.append(f"url from {url_origin}")

    final_user = user or src.get("user") or url_user or env.get("GOVC_USERNAME") or ""
    if not final_user:
        raise ConfigError(
            f"no user name for {host}",
            hint="pass --vcenter-user, set source.username in the plan, or export GOVC_USERNAME",
        )

    password: str | None = None
    if password_file:
        password, how = _read_password_file(password_file, None, "--vcenter-password-file"), "password file"
    elif src.get("password_file"):
        password, how = _read_password_file(str(src["password_file"]), base_dir, "source.password_file"), "plan file"
    elif src.get("password_env"):
        var = str(src["password_env"])
        if not env.get(var):
            raise ConfigError(f"source.password_env names {var}, which is not set (or empty)")
        password, how = env[var], var
    elif env.get(PASSWORD_ENV):
        password, how = env[PASSWORD_ENV], PASSWORD_ENV
    elif url_password:
        password, how = url_password, f"{url_origin} userinfo"
    elif env.get("GOVC_PASSWORD"):
        password, how = env["GOVC_PASSWORD"], "GOVC_PASSWORD"
    if not password:
        raise ConfigError(
            f"no password for {final_user}@{host}",
            hint=f"set {PASSWORD_ENV} or GOVC_PASSWORD, pass --vcenter-password-file, "
                 "or set source.password_env / password_file",
        )
    origins.append(f"password from {how}")

    pin = thumbprint or src.get("thumbprint")
    final_ca = ca_file or src.get("ca_file") or env.get("GOVC_TLS_CA_CERTS") or None
    if final_ca and base_dir is not None and not ca_file and src.get("ca_file"):
        ca_path = Path(str(final_ca)).expanduser()
        final_ca = str(ca_path if ca_path.is_absolute() else base_dir / ca_path)
    if insecure is None:
        if "insecure" in src:
            if not isinstance(src["insecure"], bool):
                raise ConfigError("source.insecure must be true or false")
            insecure = bool(src["insecure"])
        else:
            insecure = env.get("GOVC_INSECURE", "").strip().lower() in _TRUE
    return ConnectionSettings(
        host=host,
        port=port,
        path=path,
        user=str(final_user),
        password=password,
        ca_file=str(final_ca) if final_ca else None,
        thumbprint=normalize_thumbprint(str(pin)) if pin else None,
        insecure=bool(insecure) and not pin,
        origin="; ".join(origins),
        datacenter=str(dc) if (dc := datacenter or src.get("datacenter") or env.get("GOVC_DATACENTER")) else None,
    )
