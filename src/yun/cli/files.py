"""`yun files`: the files of the key's organization (/v1/files), as a client of the HTTP API."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from yun.cli._client import connect, path
from yun.cli._common import CliError
from yun.cli._output import print_json, print_table, say

__all__ = ["files_app"]

files_app = typer.Typer(
    help="Files of your organization (for fine-tuning and batches): upload, list, show, content, delete.",
    no_args_is_help=True,
)


class _Counted:
    """The file as httpx reads it for the upload, a chunk at a time, moving the progress bar."""

    def __init__(self, fh: BinaryIO, progress: Progress, task: Any) -> None:
        self._fh = fh
        self._progress = progress
        self._task = task

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._progress.update(self._task, completed=self._fh.tell())
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


def _created(file: dict[str, Any]) -> str:
    return datetime.fromtimestamp(file["created_at"], UTC).strftime("%Y-%m-%d %H:%M")


@files_app.command("upload")
def files_upload(
    file: Annotated[Path, typer.Argument(help="The JSONL file.", exists=True, dir_okay=False, readable=True)],
    purpose: Annotated[str, typer.Option("--purpose", help="fine-tune or batch.")] = "fine-tune",
    json: Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")] = False,
) -> None:
    """Upload a file (streamed, with a progress bar); it is checked line by line as it goes."""
    size = file.stat().st_size
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with connect() as client, file.open("rb") as fh:
        with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("upload", total=size)
            counted = _Counted(fh, progress, task)
            stored = client.upload("/v1/files", files={"file": (file.name, counted)}, data={"purpose": purpose})
    if json:
        print_json(stored)
        return
    say(stored["id"])
    typer.echo(f"{stored['filename']}: {stored['bytes']} bytes, purpose {stored['purpose']}", err=True)


@files_app.command("list")
def files_list(
    purpose: Annotated[str | None, typer.Option("--purpose", help="Only files of this purpose.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the server's full answer as JSON.")] = False,
) -> None:
    """Your organization's files, newest first."""
    with connect() as client:
        found = client.get("/v1/files", purpose=purpose)
    if json:
        print_json(found)
        return
    print_table(
        ["id", "filename", "purpose", "bytes", "status", "created"],
        ([f["id"], f["filename"], f["purpose"], f["bytes"], f["status"], _created(f)] for f in found["data"]),
    )


@files_app.command("show")
def files_show(file_id: Annotated[str, typer.Argument(help="File id (file-…).")]) -> None:
    """One file's details, as JSON."""
    with connect() as client:
        print_json(client.get(path("v1", "files", file_id)))


@files_app.command("content")
def files_content(
    file_id: Annotated[str, typer.Argument(help="File id (file-…).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to this file [default: stdout].", dir_okay=False)
    ] = None,
) -> None:
    """A file's bytes, to stdout or into a file (written whole, or not at all)."""
    with connect() as client:
        if output is None:
            out = sys.stdout.buffer
            client.download(path("v1", "files", file_id, "content"), out.write)
            out.flush()
            return
        partial = output.with_name(f".{output.name}.{os.getpid()}.part")
        try:
            with partial.open("wb") as fh:
                client.download(path("v1", "files", file_id, "content"), fh.write)
            os.replace(partial, output)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror or exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
    typer.echo(f"wrote {output}", err=True)


@files_app.command("delete")
def files_delete(file_id: Annotated[str, typer.Argument(help="File id (file-…).")]) -> None:
    """Delete a file (its storage is freed at once)."""
    with connect() as client:
        client.delete(path("v1", "files", file_id))
    say(f"deleted {file_id}")
