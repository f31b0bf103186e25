"""Small helpers shared by command modules (light imports only)."""

from __future__ import annotations

from scmt_cli.errors import NotAvailableError


def not_available(command: str, issue: str) -> NotAvailableError:
    """The error a command raises while its engine has not landed yet."""
    return NotAvailableError(
        f"'scmt {command}' is not available yet in this release",
        hint=f"it lands with {issue}; nothing was changed",
    )
