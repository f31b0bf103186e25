"""``scmt schema [COMMAND]``: the JSON Schema of a command's ``--json`` document."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scmt_cli.cli.context import current


class _SchemaDoc:
    """A schema (or the list of documents): printed as it is, with or without --json."""

    exit_code = 0
    raw_document = True

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


def schema(
    command: Annotated[Optional[list[str]], typer.Argument(
        help="A command (e.g. 'assess', 'plan validate') or exit_error; none: list them.", metavar="COMMAND",
        show_default=False)] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of COMMAND's --json document.

    Every document has schema_version, exit_code and warnings; 'exit_error' is the document of a failed
    command.  The files are also in the installed package (scmt_cli/cli/schemas/).
    """
    from scmt_cli.cli import docschema

    ui = current()
    if not command:
        docs = [{"document": d, "schema_version": None if d in docschema.RAW else docschema.schema_version(d),
                 "description": docschema.describe(d)} for d in docschema.DOCUMENTS]
        ui.finish(_SchemaDoc({"documents": docs}), _render_list)
        return
    ui.finish(_SchemaDoc(docschema.document_schema(" ".join(command))), _render_schema)


def _render_schema(console: Console, result: Any) -> None:
    import json

    console.file.write(json.dumps(result.data, indent=2) + "\n")


def _render_list(console: Console, result: Any) -> None:
    for d in result.data["documents"]:
        version = f"v{d['schema_version']}" if d["schema_version"] is not None else "-"
        console.print(f"  {d['document']:<15} {version:<3} {d['description']}", markup=False, highlight=False,
                      soft_wrap=True)
    console.print("Print one with: scmt schema COMMAND", markup=False, highlight=False, soft_wrap=True)
