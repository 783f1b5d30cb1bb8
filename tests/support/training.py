"""The trainer process and a replica with LoRA adapters, as the training tests drive them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from yun.cluster.backends.engine_process import free_port
from yun.jobs.training import read_events

__all__ = ["answer", "replica_with_adapters", "start_trainer", "wait_for_event", "write_dataset"]


def write_dataset(path: Path, question: list[dict[str, Any]], answer: str, n: int = 24) -> Path:
    """`n` copies of one chat: the question and the answer to learn."""
    chat = {"messages": [*question, {"role": "assistant", "content": answer}]}
    path.write_text("".join(json.dumps(chat) + "\n" for _ in range(n)))
    return path


def start_trainer(spec: Path, events: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "yun.jobs.training", "--spec", str(spec), "--events", str(events)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_event(events: Path, process: subprocess.Popen[bytes], kind: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists():
            for event in read_events(events):
                if event["type"] == kind:
                    return event
        assert process.poll() is None, f"the trainer exited ({process.returncode}) before a {kind} event"
        time.sleep(0.05)
    raise AssertionError(f"no {kind} event in {timeout} s")


@contextlib.contextmanager
def replica_with_adapters(model: Path, *adapters: Path, threads: int = 1, ctx: int = 256) -> Iterator[httpx.Client]:
    """A real xllamacpp worker process of `model` with `adapters` loaded (ids 0, 1, ...)."""
    port = free_port("127.0.0.1")
    argv = [
        sys.executable, "-m", "yun.engines.xllamacpp_worker", "--model", str(model), "--port", str(port),
        "--threads", str(threads), "--parallel", "1", "--ctx", str(ctx),
    ]  # fmt: skip
    for adapter in adapters:
        argv += ["--lora", str(adapter)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("listening")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def answer(client: httpx.Client, messages: list[dict[str, Any]], max_tokens: int, **extra: Any) -> str:
    body = {"messages": messages, "temperature": 0, "max_tokens": max_tokens, **extra}
    response = client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    content: str = response.json()["choices"][0]["message"]["content"]
    return content
