"""What counting a prompt with the model's tokenizer adds to each request, against the byte bound it replaced.

Run (about a minute; builds the tiny test model once if it is not cached):
    .venv/bin/python bench/prompt_count.py [--rounds 5] [--calls 400] [--no-replica]

For each request shape, in the same process and interleaved round by round (the machine is shared, so
only same-run differences mean anything):
- `bound`: the old byte bound (gateway/estimate.py), called as the gateway called it;
- `count`: `Gateway.prompts.chat` / `.inputs` (gateway/prompt.py), exactly as the request path awaits it,
  the model's vocabulary and chat template from its GGUF (the tiny test model: Qwen2.5's tokenizer);
- `replica` (unless --no-replica): the alternative of asking a llama.cpp replica of the same model,
  `/apply-template` then `/tokenize` over aiohttp (chat) or `/tokenize` (text), as the gateway would.
Printed per shape: median per-request wall time (µs, = added latency at concurrency 1, since counting
runs on the event loop below 4,096 characters) and CPU time (µs, process_time) of each, and the
count's p99. The gateway's targets: <= 1 ms added p50, <= 5 ms p99 at c=1, <= 0.6 ms CPU per request
(bench/README.md). JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from tests.support.tiny_model import tiny_model_path  # noqa: E402

from yun.cluster import ReplicaSpec  # noqa: E402
from yun.gateway.estimate import chat_prompt_bound, input_bound  # noqa: E402
from yun.gateway.prompt import PromptCounts  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
PARAGRAPH = "The quick brown fox jumps over the lazy dog; 12 boxes of 34 jugs, naïve café. "  # 78 chars


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


HISTORY = [
    {"role": "system", "content": PARAGRAPH * 6},
    {"role": "user", "content": PARAGRAPH * 20},
    {"role": "assistant", "content": PARAGRAPH * 20},
]

# (name, kind, body for call i). "new" texts differ on every call (nothing remembered helps); a "resent"
# history is what a chat client sends on each turn: the same earlier messages plus a new one.
SHAPES: list[tuple[str, str, Callable[[int], Any]]] = [
    ("chat 10 B (gateway_overhead's body)", "chat", lambda i: chat("Say hello.")),
    ("chat 1 KB, new", "chat", lambda i: chat(f"{i} " + PARAGRAPH * 13)),
    ("chat 4 KB, new (on a thread)", "chat", lambda i: chat(f"{i} " + PARAGRAPH * 52)),
    ("chat 300 B + tools, new", "chat", lambda i: {**chat(f"{i} " + PARAGRAPH * 4), "tools": TOOLS}),
    (
        "chat 3.6 KB history resent + new 80 B",
        "chat",
        lambda i: {"messages": [*HISTORY, *chat(f"{i} {PARAGRAPH}")["messages"]]},
    ),
    ("chat 16 KB, new (on a thread)", "chat", lambda i: chat(f"{i} " + PARAGRAPH * 210)),
    ("completion 1 KB, new", "text", lambda i: [f"{i} " + PARAGRAPH * 13]),
    ("completion 40k words, new (on a thread)", "text", lambda i: [f"{i} " + "word " * 40_000]),
]


CALL = iter(range(1 << 62))  # a new number for every call of every side: "new" texts are never seen twice


async def timed(
    fn: Callable[[Any], Awaitable[Any]], make: Callable[[int], Any], calls: int
) -> tuple[list[float], float]:
    """Per-call wall times (s) and CPU seconds per call (building the body included, the same on every side)."""
    walls = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = time.perf_counter()
        await fn(make(next(CALL)))
        walls.append(time.perf_counter() - t0)
    return walls, (time.process_time() - cpu0) / calls


def start_replica(model: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "yun.engines.xllamacpp_worker", "--model", str(model), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # "listening ..." once the model is loaded
    if not line.startswith("listening"):
        proc.kill()
        raise RuntimeError(f"replica did not start: {line!r}")
    return proc, f"http://127.0.0.1:{port}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400, help="calls per shape, side and round")
    parser.add_argument("--no-replica", action="store_true")
    args = parser.parse_args()

    model = tiny_model_path()
    spec = ReplicaSpec("tiny", "chat", path=str(model), context_length=1 << 20)
    counts = PromptCounts()
    t0 = time.perf_counter()
    await counts.prepare(spec)  # type: ignore[misc]
    load_s = time.perf_counter() - t0

    replica = None
    session = None
    if not args.no_replica:
        import aiohttp

        replica, base = start_replica(model)
        session = aiohttp.ClientSession()

    async def ask_replica(kind: str, body: Any) -> int:
        assert session is not None
        if kind == "chat":
            async with session.post(f"{base}/apply-template", json=body) as r:
                text = (await r.json())["prompt"]
        else:
            text = body[0]
        async with session.post(f"{base}/tokenize", json={"content": text, "add_special": True}) as r:
            return len((await r.json())["tokens"])

    results: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(args.rounds):
            for name, kind, make in SHAPES:
                calls = max(20, args.calls // (20 if "thread" in name else 1))
                sides: dict[str, Callable[[Any], Awaitable[Any]]] = {}
                if kind == "chat":
                    sides["bound"] = lambda b: _sync(chat_prompt_bound, b)
                    sides["count"] = lambda b: counts.chat(spec, b)
                else:
                    sides["bound"] = lambda b: _sync(lambda items: [input_bound(i) for i in items], b)
                    sides["count"] = lambda b: counts.inputs(spec, b)
                if session is not None:
                    sides["replica"] = lambda b, k=kind: ask_replica(k, b)
                for side, fn in sides.items():
                    walls, cpu = await timed(fn, make, calls if side != "replica" else max(20, calls // 4))
                    r = results.setdefault(name, {})
                    r.setdefault(f"{side}_p50", []).append(statistics.median(walls))
                    r.setdefault(f"{side}_p99", []).append(sorted(walls)[int(len(walls) * 0.99) - 1])
                    r.setdefault(f"{side}_cpu", []).append(cpu)
    finally:
        if session is not None:
            await session.close()
        if replica is not None:
            replica.kill()
            replica.wait()

    tokens = {
        name: await (counts.chat(spec, make(0)) if k == "chat" else _first(counts.inputs(spec, make(0))))
        for name, k, make in SHAPES
    }
    us = 1e6
    print(f"counter load (vocabulary + merges + template from the GGUF): {load_s:.2f} s, once per model\n")
    head = f"{'shape':40} {'tokens':>7} {'bound p50':>9} {'count p50':>9} {'count p99':>9} {'count CPU':>9}"
    head += f" {'added p50':>9}"
    if session is not None:
        head += f" {'replica p50':>11} {'replica CPU':>11} {'count/replica p50':>17}"
    print(head + "   (µs per request, medians over rounds)")
    for name, _, _ in SHAPES:
        r = {k: statistics.median(v) * us for k, v in results[name].items()}
        line = f"{name:40} {tokens[name].tokens:>7} {r['bound_p50']:>9.1f} {r['count_p50']:>9.1f}"
        line += f" {r['count_p99']:>9.1f} {r['count_cpu']:>9.1f} {r['count_p50'] - r['bound_p50']:>9.1f}"
        if session is not None:
            line += f" {r['replica_p50']:>11.1f} {r['replica_cpu']:>11.1f} {r['count_p50'] / r['replica_p50']:>17.2f}"
        print(line)
    out = BENCH / "results" / f"prompt_count-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"load_s": load_s, "results": results}, indent=1))
    print(f"\nraw numbers: {out}")


async def _sync(fn: Callable[[Any], Any], arg: Any) -> Any:
    return fn(arg)


async def _first(items: Awaitable[list[Any]]) -> Any:
    return (await items)[0]


if __name__ == "__main__":
    asyncio.run(main())
