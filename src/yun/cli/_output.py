"""How the CLI prints: tables that never cut a value, JSON for machines, one-line errors.

Tables are printed at their natural width, as kubectl and docker print theirs: an id cut to fit 80
columns cannot be copied into the next command, so a wide row runs past the terminal's edge instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

__all__ = ["print_json", "print_table", "say", "when"]


def say(message: str) -> None:
    """One line for people, on stdout."""
    typer.echo(message)


def print_json(data: Any) -> None:
    """Machine-readable and complete: exactly what the server answered."""
    typer.echo(json.dumps(data, indent=2, default=str))


def when(iso: str | None) -> str:
    """An ISO timestamp shortened for a table: '2026-12-04 17:01' (UTC); empty for none."""
    return "" if not iso else iso.replace("T", " ")[:16]


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    screen = Console()
    natural = Measurement.get(screen, screen.options.update_width(1_000_000), table).maximum
    Console(width=max(natural, screen.width), soft_wrap=True).print(table)
