"""``python -m scmt_cli.lab``: serve a lab's fake vCenter until SIGTERM/SIGINT.

It prints one JSON line (``url``, ``thumbprint``, ``user``, ``rpc``,
``cert_file``, ``pid``) once the endpoint listens on ``--port`` (default: any
free port); other processes reach the estate through
:class:`~scmt_cli.lab.remote.RemoteFakeVCenter` when ``SCMT_FAKE_VCENTER_RPC``
names that ``rpc`` URL.

``--print-env`` starts the same server in the background (its own session, so
it outlives the shell's command substitution), waits until it listens and
prints ``export`` lines for ``eval "$(python -m scmt_cli.lab ... --print-env)"``:
``SCMT_FAKE_VCENTER_RPC``, ``SCMT_VCENTER_PASSWORD`` (the lab's password: a lab,
not a secret), ``GOVC_TLS_CA_CERTS`` (the lab's certificate, which scmt trusts
for a plan that pins none) and ``SCMT_LAB_PID`` (``kill $SCMT_LAB_PID`` stops it).

``python -m scmt_cli.lab guest build`` builds (or finds in the cache) the
bootable lab guest and prints its path, size and build times as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
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
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--print-env", action="store_true",
                        help="run in the background and print export lines for eval \"$(...)\"")
    parser.add_argument("--no-tls", action="store_true", help="plain HTTP (tests only)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected 0 to 65535")
    if args.print_env:
        return _background(args)
    # SIGTERM/SIGINT are blocked in every thread and taken with sigwait: a Python handler that set an
    # Event could interrupt the main thread inside that Event's own lock and deadlock (seen: a lab that
    # never stopped).
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    with tempfile.TemporaryDirectory(prefix="scmt-fake-vc-") as tmp:
        try:
            estate = start_estate(Path(args.lab), Path(args.workdir or tmp), tls=not args.no_tls, port=args.port)
        except ScmtError as exc:
            sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
            return exc.exit_code
        install_rpc(estate)
        info: dict[str, Any] = {"url": estate.base_url + "/sdk", "thumbprint": estate.http.thumbprint}
        info.update(user=estate.lab.user, rpc=estate.base_url + "/sdk/rpc", cert_file=str(estate.http.cert_file),
                    password=estate.lab.password, pid=os.getpid())
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        signal.sigwait(stops)
        stop_estate(estate)
    return 0


def _background(args: argparse.Namespace) -> int:
    """Start the server as a detached child, wait for its JSON line, print export lines (see module doc)."""
    argv = [sys.executable, "-m", "scmt_cli.lab", "--lab", str(Path(args.lab).resolve()), "--port", str(args.port)]
    if args.workdir:
        argv += ["--workdir", str(Path(args.workdir).resolve())]
    if args.no_tls:
        argv.append("--no-tls")
    log = Path(tempfile.gettempdir()) / f"scmt-lab-{os.getpid()}.log"
    with open(log, "w", encoding="utf-8") as err:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                                 start_new_session=True)
    assert child.stdout is not None
    first = child.stdout.readline()  # the JSON line once it listens, or "" when it failed
    if not first:
        code = child.wait()
        sys.stderr.write(log.read_text(encoding="utf-8") or f"error: the fake vCenter exited with {code}\n")
        log.unlink(missing_ok=True)
        return code or 1
    info = json.loads(first)
    exports = {"SCMT_FAKE_VCENTER_RPC": info["rpc"], "SCMT_VCENTER_PASSWORD": info["password"],
               "SCMT_LAB_PID": str(child.pid)}
    if info.get("cert_file") and not args.no_tls:
        exports["GOVC_TLS_CA_CERTS"] = info["cert_file"]
    for name, value in exports.items():
        sys.stdout.write(f"export {name}={shlex.quote(value)}\n")
    sys.stdout.write(f"# fake vCenter {info['url']} (user {info['user']}), pid {child.pid}, log {log}; "
                     "stop it with: kill $SCMT_LAB_PID\n")
    sys.stdout.flush()
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
