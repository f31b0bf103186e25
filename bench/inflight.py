"""The ``--in-flight`` sweep behind scmt's defaults (``python bench/run.py --only inflight``).

Imported by ``bench/run.py``.  ``scmt copy --in-flight N`` for N in 4, 8, 16
and 32, round-robin within each setting so load changes hit every N alike:

* file->file (the ``LOCAL_IN_FLIGHT`` default applies to ``file://`` sources);
* NBD->file from nbdkit ``file`` on 127.0.0.1 with no delay, ``rdelay=2ms``
  and ``rdelay=10ms`` (``REMOTE_IN_FLIGHT`` applies to every network source).

Each row shows best and median and its peak RSS (memory grows with N: N
buffers of one chunk); the note after each setting names the fastest N by
median and the Ns within 5% of it.
"""

from __future__ import annotations

from typing import Any

SWEEP = (4, 8, 16, 32)


def run_inflight(ctx: Any, rows: list[Any], notes: list[str]) -> None:
    src, dst, state = ctx.src, ctx.dst, ctx.state
    settings: list[tuple[str, tuple[str, ...]]] = [("file->file", ()), ("nbd", ()), ("nbd rdelay=2ms", ("2ms",)),
                                                    ("nbd rdelay=10ms", ("10ms",))]
    for label, delay in settings:
        srv = None
        if label == "file->file":
            url = f"file://{src}"
        else:
            filters = ("delay",) if delay else ()
            srv = ctx.Nbdkit(src, filters=filters, params=tuple(f"rdelay={d}" for d in delay))
            url = srv.url
        try:
            cmds = {f"{n}": [*ctx.scmt_cmd(url, f"file://{dst}", state=state), "--in-flight", str(n)]
                    for n in SWEEP}
            res = ctx.interleaved(ctx.repeat, ctx.prep, cmds)
            ctx.check_same(f"in-flight sweep, {label}")
        finally:
            if srv is not None:
                srv.stop()
        fastest = min(res, key=lambda k: res[k].median)
        close = [k for k in res if res[k].median <= res[fastest].median * 1.05]
        for n, runs in res.items():
            note = "fastest median" if n == fastest else f"{runs.median / res[fastest].median:.2f}x the fastest"
            rows.append(ctx.time_row(f"in-flight {n:>2}, {label} scmt copy", runs, note, limit=True))
        notes.append(f"in-flight sweep, {label}: fastest median at {fastest}; within 5%: {', '.join(close)}")
