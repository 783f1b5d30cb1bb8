"""`yun files` against the live server: upload (streamed, checked), list, show, content, delete, and the
server's refusal of a bad file as one clear line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli


def _training(n: int = 12) -> bytes:
    lines = []
    for i in range(n):
        messages = [{"role": "user", "content": f"{i}?"}, {"role": "assistant", "content": str(i)}]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


def test_files_upload_list_show_content_delete(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "train.jsonl"
    source.write_bytes(_training())
    file_id = cli.run("files", "upload", str(source), "--purpose", "fine-tune").strip()
    assert file_id.startswith("file-")
    assert file_id in cli.run("files", "list")
    assert file_id in cli.run("files", "list", "--purpose", "fine-tune")
    assert file_id not in cli.run("files", "list", "--purpose", "batch")
    shown = json.loads(cli.run("files", "show", file_id))
    assert (shown["filename"], shown["bytes"], shown["purpose"]) == ("train.jsonl", len(_training()), "fine-tune")
    assert cli.run("files", "content", file_id).encode() == _training()
    target = tmp_path / "out" / "copy.jsonl"
    target.parent.mkdir()
    cli.run("files", "content", file_id, "-o", str(target))
    assert target.read_bytes() == _training()
    assert f"deleted {file_id}" in cli.run("files", "delete", file_id)
    assert "No such File object" in cli.fail("files", "show", file_id)


def test_a_bad_file_is_refused_naming_its_line(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(_training(3) + b'{"messages": [{"role": "user", "content": "no answer"}]}\n')
    line = cli.fail("files", "upload", str(source))
    assert "line 4: no assistant message" in line and "(HTTP 400)" in line
    assert "not-a-purpose" in cli.fail("files", "upload", str(source), "--purpose", "not-a-purpose")
