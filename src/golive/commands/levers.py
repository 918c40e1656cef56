"""`golive levers demo`: every application lever, before and after, on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from golive.commands.common import fail
from golive.commands.urls import ServerError, api_base, first_model, server_base

levers_app = typer.Typer(help="The application levers, measured on your machine.",
                         no_args_is_help=True, add_completion=False)


@levers_app.command()
def demo(
    url: Annotated[Optional[str], typer.Option(help="Use a running golive server (base URL, "
                                                    "with or without /v1) instead of starting "
                                                    "one")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results here")] = None,
    doc: Annotated[Optional[Path], typer.Option(help="Update the table in this markdown file "
                                                     "(between <!-- levers:demo --> markers)")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for the server it starts "
                                              "(0 = all cores)")] = 0,
) -> None:
    """Run each lever on the embedded model and print a before/after table."""
    from golive import levers_demo

    if url is not None:
        url = server_base(url)
        try:
            first_model(api_base(url))  # a wrong URL is one line, not a traceback per lever
        except ServerError as e:
            fail(f"golive levers demo: {e}")
    levers_demo.demo(url, json_out, doc, threads)
