"""``scmt agent``: the source-side agent for the agent-based methods."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current

app = typer.Typer(help="The scmt agent: runs on the source machine and serves its disks read-only.",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command("serve")
def serve(
    disk: Annotated[list[str], typer.Option("--disk", help="Serve this disk as NAME=PATH (block device or "
                                                           "image file); repeat for more.", metavar="NAME=PATH")],
    listen: Annotated[str, typer.Option("--listen", help="Address to listen on, HOST:PORT.",
                                        metavar="HOST:PORT")] = "127.0.0.1:20000",
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", help="File holding the shared token (at least 16 bytes); else SCMT_AGENT_TOKEN.",
        metavar="FILE")] = None,
    queue_depth: Annotated[int, typer.Option("--queue-depth", help="Reads executed at once (memory bound).",
                                             min=1, max=64, metavar="N")] = 4,
    bandwidth: Annotated[str, typer.Option(
        "--bandwidth", help="Send at most this rate, e.g. 300Mbit (the default), or 'unlimited'.",
        metavar="RATE")] = "300Mbit",
    no_compress: Annotated[bool, typer.Option("--no-compress", help="Never zstd-compress data.")] = False,
    tls_cert: Annotated[Optional[Path], typer.Option(
        "--tls-cert", help="Serve TLS with this certificate (PEM); clients pin its SHA-256.", metavar="PEM")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="The certificate's private key (PEM).",
                                                    metavar="PEM")] = None,
    tls_dir: Annotated[Optional[Path], typer.Option(
        "--tls-dir", help="Where the agent keeps the key and certificate it makes (default: beside the token).",
        metavar="DIR")] = None,
    plaintext: Annotated[bool, typer.Option("--plaintext", help="Serve plain TCP, no TLS (loudly insecure).")] = False,
    allow_open_token_file: Annotated[bool, typer.Option(
        "--allow-open-token-file", help="Accept a token file that group or others can read.")] = False,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="No kernel change tracking (scan instead).")
                           ] = False,
    cpu_limit: Annotated[float, typer.Option(
        "--cpu-limit", help="CPU time the agent may use, percent of one core, averaged over 2 s (sending "
        "300Mbit with TLS and zstd takes about 20; hashing for a scan is what it holds back); 100: no limit.",
        metavar="PCT")] = 25.0,
    storage_share: Annotated[float, typer.Option(
        "--storage-share", help="Share of the time the agent's reads may keep its disks busy, percent (the "
        "seed's storage load: like iostat %util, counted for the agent's reads only; the reads pause to stay "
        "under it, averaged over 2 s); 100: no limit.", metavar="PCT")] = 30.0,
) -> None:
    """Serve block devices or image files read-only to the migration host (authenticated).

    Example: scmt agent serve --listen 0.0.0.0:20000 --disk sda=/dev/sda --token-file /etc/scmt/agent.token
    """
    from scmt_cli.agent.service import ServeRequest, serve_agent
    from scmt_cli.domain.units import parse_rate
    from scmt_cli.errors import UsageError

    ui = current()
    try:
        rate = parse_rate(bandwidth)
    except ValueError as exc:
        raise UsageError(f"--bandwidth: {exc}") from None
    req = ServeRequest(listen=listen, disks=tuple(disk), token_file=token_file, queue_depth=queue_depth,
                       bandwidth=rate, compress=not no_compress, tls_cert=tls_cert, tls_key=tls_key,
                       tls_dir=tls_dir, plaintext=plaintext, allow_open_token_file=allow_open_token_file,
                       tracking=not no_tracking, cpu_limit=cpu_limit, storage_share=storage_share)
    result = serve_agent(req, ui.reporter)
    ui.finish(result, render)


def agent_line(agent: dict[str, Any]) -> str:
    """An agent's figures (``agent`` in copy and sync results) in one line: CPU, bytes read, pauses, peak RSS."""
    from scmt_cli.domain.units import format_size

    paused = sum(float(v) for v in (agent.get("throttled_seconds") or {}).values())
    rss = agent.get("peak_rss_bytes")
    read = format_size(int(agent.get("disk_bytes_read") or 0))
    return (f"CPU {float(agent.get('cpu_seconds') or 0):.2f} s, read {read} from its disks, paused {paused:.2f} s "
            f"for its limits, peak RSS {format_size(rss) if isinstance(rss, int) else '-'}")


def render(console: Console, result: Any) -> None:
    console.print(f"agent on {result.address} stopped ({result.auth_failures} failed authentication(s))",
                  markup=False, highlight=False)


@app.command("restore")
def restore(
    plan: Annotated[Path, typer.Argument(help="The plan file.", metavar="PLAN")],
    vm: Annotated[Optional[list[str]], typer.Option(
        "--vm", help="The hot-backup VM (required, exactly one: unlike the --vm filter of the other commands, it "
                     "names the one VM whose disks a restore rebuilds).", metavar="NAME")] = None,
    generation: Annotated[Optional[int], typer.Option(
        "--generation", help="Restore the state after this sync generation (omit to list restore points).",
        metavar="N")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the restored disk<N>.raw files.",
                                                metavar="DIR")] = None,
) -> None:
    """Point-in-time restore of a hot-backup VM's disks from its journal (the target disks are not touched).

    One VM per run: --vm is required and names exactly one VM (missing or repeated: exit 2).
    """
    from scmt_cli.errors import UsageError
    from scmt_cli.services.migration.restore import RestoreRequest, restore_service
    from scmt_cli.state.store import StateStore

    if not vm or len(set(vm)) != 1:
        got = "no --vm" if not vm else f"--vm {', --vm '.join(dict.fromkeys(vm))}"
        raise UsageError(f"agent restore works on exactly one VM (a restore rebuilds that VM's disks); got {got}",
                         hint="name one hot-backup VM, e.g. 'scmt agent restore PLAN --vm db01'")
    ui = current()
    store = StateStore.open(ui.opts.state)
    try:
        result = restore_service(RestoreRequest(plan, vm[0], generation, out), store, ui.reporter)
    finally:
        store.close()
    ui.finish(result, render_restore)


def render_restore(console: Console, result: Any) -> None:
    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    if result.generation is not None:
        line(f"{result.vm}: restored generation {result.generation}:")
        for f in result.files:
            line(f"  {f}")
        return
    line(f"{result.vm}: {len(result.points)} restore point(s)")
    for pt in result.points:
        line(f"  generation {pt['generation']:>5}  {pt['time']}  ({pt['kind']})")
