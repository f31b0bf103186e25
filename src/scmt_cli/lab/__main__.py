"""``python -m scmt_cli.lab``: serve a lab's fake vCenter until SIGTERM/SIGINT.

It prints one JSON line (``url``, ``thumbprint``, ``user``, ``rpc``,
``cert_file``) once the endpoint listens; other processes reach the estate
through :class:`~scmt_cli.lab.remote.RemoteFakeVCenter` when
``SCMT_FAKE_VCENTER_RPC`` names that ``rpc`` URL.

``python -m scmt_cli.lab guest build`` builds (or finds in the cache) the
bootable lab guest and prints its path, size and build times as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from scmt_cli.errors import ScmtError
from scmt_cli.lab.remote import install_rpc
from scmt_cli.lab.vcenter import start_estate, stop_estate


def serve(argv: list[str] | None = None) -> int:
    """Serve a lab's fake vCenter (login, /folder and the RPC) until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m scmt_cli.lab", description=serve.__doc__)
    parser.add_argument("--lab", required=True, help="lab file (see examples/lab.yaml)")
    parser.add_argument("--workdir", help="directory for disk files (default: a temporary one)")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP (tests only)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="scmt-fake-vc-") as tmp:
        try:
            estate = start_estate(Path(args.lab), Path(args.workdir or tmp), tls=not args.no_tls)
        except ScmtError as exc:
            sys.stderr.write(f"error: {exc.message}\n")
            return exc.exit_code
        install_rpc(estate)
        info: dict[str, Any] = {"url": estate.base_url + "/sdk", "thumbprint": estate.http.thumbprint}
        info.update(user=estate.lab.user, rpc=estate.base_url + "/sdk/rpc", cert_file=str(estate.http.cert_file))
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        stop.wait()
        stop_estate(estate)
    return 0


def guest(argv: list[str]) -> int:
    """``python -m scmt_cli.lab guest build|path``: build (or reuse) the cached bootable lab guest."""
    from scmt_cli.lab.guest import cache_root, cached_image, ensure_image

    parser = argparse.ArgumentParser(prog="python -m scmt_cli.lab guest", description=guest.__doc__)
    parser.add_argument("action", choices=("build", "path"),
                        help="build: build the image unless cached, print its facts; path: print its path "
                             "(exit 1 when not built)")
    args = parser.parse_args(argv)
    if args.action == "path":
        found = cached_image()
        if found is None:
            sys.stderr.write(f"not built yet (cache: {cache_root()}); run: python -m scmt_cli.lab guest build\n")
            return 1
        sys.stdout.write(f"{found.path}\n")
        return 0
    try:
        img = ensure_image(progress=lambda m: print(m, file=sys.stderr))
    except ScmtError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    sys.stdout.write(json.dumps({"path": str(img.path), "key": img.key, "size": img.size,
                                 "allocated": img.allocated, **img.info}) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["guest"]:
        return guest(args[1:])
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
