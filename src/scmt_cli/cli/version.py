"""``scmt version``: versions of scmt, Python and the external tools it can use."""

from __future__ import annotations

from rich.console import Console

from scmt_cli.cli.context import current


def version() -> None:
    """Print scmt's version and which optional external tools were found."""
    from scmt_cli.services.version import collect

    current().finish(collect(), render)


def render(console: Console, result: object) -> None:
    from scmt_cli.services.version import VersionInfo

    assert isinstance(result, VersionInfo)
    console.print(f"scmt {result.version} (Python {result.python}, {result.platform})")
    for name, found in sorted(result.tools.items()):
        console.print(f"  {name:<18} {found or 'not found'}")
