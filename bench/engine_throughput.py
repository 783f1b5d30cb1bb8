"""Output tokens/s through Yun vs the same xllamacpp engine called directly (target: Yun >= 95% of direct).

Run (about 4 minutes on an otherwise idle machine):
    .venv/bin/python bench/engine_throughput.py [--concurrency 1 4 8] [--rounds 2] [--max-tokens 128] [--no-recheck]

What it does:
1. Starts Yun's replica worker alone (`python -m yun.engines.xllamacpp_worker`, default Qwen2.5-Coder-0.5B
   GGUF, 2 threads, 8 slots, 4096 context per slot) and measures it; stops it.
2. Starts `yun serve` (fresh temp data dir, default models, YUN_ENGINE__PARALLEL=8, so its chat replica
   is the same worker with the same settings) and measures through Yun's /v1/chat/completions.
3. Measures the direct worker again (A-B-A), so drift from other load on a shared machine shows up as a
   before/after difference instead of silently skewing the ratio; the ratio uses their mean.
Only one of them runs at a time: they would compete for the 2 cores.

At each concurrency N, N httpx streaming clients each send `--rounds` requests back to back (at least 8
requests per level: a single stream sends 8), with a fixed prompt, temperature 0, max_tokens and
stream_options.include_usage. tokens/s = completion tokens (usage chunk) / wall time of the level.
Also shown: median time to first token, and the share of the machine's CPU used by processes this
program did not start (/proc/stat minus its own process trees): llama.cpp runs 2 threads on 2 cores,
so any other load stalls it. JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from yun.catalog.bundled import QWEN_CODER_05B, ensure_joined

BENCH = Path(__file__).resolve().parent
VENV_BIN = BENCH.parent / ".venv" / "bin"
KEY_RE = re.compile(r"yun-[A-Za-z0-9_-]{43}")
MODEL = "qwen2.5-coder-0.5b-instruct"
TICK = os.sysconf("SC_CLK_TCK")
PROMPT = "Write a Python module that implements a binary search tree with insert, delete and search, with docstrings."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        process_group=0,  # own group for killpg; same session (sched autogroup)
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started and its whole group (yun serve's replicas live in it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float, yun: bool) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200 and (not yun or r.json().get("status") == "ok"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s; see {log}")


async def one_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str], max_tokens: int) -> dict:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft, usage, content_chunks = None, None, 0
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                usage = event["usage"]
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                content_chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    tokens = usage["completion_tokens"] if usage else content_chunks
    return {"tokens": tokens, "ttft_s": ttft, "counted_by_usage": usage is not None}


async def run_level(base: str, key: str, conc: int, rounds: int, max_tokens: int) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{base}/v1/chat/completions"
    results: list[dict] = []
    # A fresh connection per request, for both targets: a TCP connect on loopback is noise next to a
    # multi-second stream, and llama.cpp's server sometimes drops a kept-alive connection under load.
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            for _ in range(rounds):
                results.append(await one_stream(client, url, headers, max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in results)
    ttfts = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
    return {
        "concurrency": conc,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "all_counted_by_usage": all(r["counted_by_usage"] for r in results),
    }


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime (+ reaped children's) of `pid` and all its live descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            total += sum(int(f) for f in Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11:15])
            stack += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / TICK


def busy_seconds() -> float:
    """Non-idle CPU time of the whole machine, from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / TICK


def measure(name: str, base: str, key: str, server_pid: int, args: argparse.Namespace) -> list[dict]:
    asyncio.run(run_level(base, key, 1, 1, 8))  # warm-up: first-request costs stay out of the numbers
    levels = []
    for conc in args.concurrency:
        busy0, server0, me0 = busy_seconds(), tree_cpu_seconds(server_pid), time.process_time()
        rounds = max(args.rounds, -(-8 // conc))  # at least 8 requests per level: 1 stream is the noisiest
        level = asyncio.run(run_level(base, key, conc, rounds, args.max_tokens))
        ours = tree_cpu_seconds(server_pid) - server0 + time.process_time() - me0
        others = busy_seconds() - busy0 - ours  # CPU used by processes this program did not start
        level["others_pct"] = max(0.0, 100 * others / (level["wall_s"] * (os.cpu_count() or 1)))
        print(
            f"  {name} c={conc}: {level['tokens_per_s']:.1f} tok/s ({level['completion_tokens']} tokens "
            f"in {level['wall_s']:.1f}s; others used {level['others_pct']:.0f}% of the machine)",
            file=sys.stderr,
            flush=True,
        )
        levels.append(level)
    return levels


def show_logs(*logs: Path) -> None:
    for log in logs:
        if log.is_file():
            print(f"--- tail of {log}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)


def run_direct(model: Path, tmp: Path, args: argparse.Namespace) -> list[dict]:
    port = free_port()
    log = tmp / "direct.log"
    worker = ["-m", "yun.engines.xllamacpp_worker", "--model", str(model), "--port", str(port)]
    proc = start([str(VENV_BIN / "python"), *worker, "--threads", "2", "--parallel", "8", "--ctx", "4096"], log)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 120, yun=False)
        return measure("direct", f"http://127.0.0.1:{port}", "", proc.pid, args)
    except BaseException:
        show_logs(log)
        raise
    finally:
        stop(proc)


def run_yun(model: Path, tmp: Path, args: argparse.Namespace) -> list[dict]:
    data = tmp / "data"
    # Reuse the joined GGUF (Yun's ensure_joined accepts a file of the right size) instead of a 470 MB copy.
    (data / "models").mkdir(parents=True)
    (data / "models" / model.name).symlink_to(model)
    port = free_port()
    log = tmp / "yun.log"
    env = {**os.environ, "YUN_ENGINE__PARALLEL": "8", "YUN_ENGINE__THREADS": "2"}
    env["YUN_ENGINE__CONTEXT_PER_SLOT"] = "4096"
    proc = start([str(VENV_BIN / "yun"), "serve", "--data-dir", str(data), "--port", str(port)], log, env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 240, yun=True)
        match = KEY_RE.search(log.read_text())
        if not match:
            raise RuntimeError(f"no bootstrap key in {log}")
        return measure("yun", f"http://127.0.0.1:{port}", match.group(0), proc.pid, args)
    except BaseException:
        show_logs(log, *sorted((data / "logs").glob("*.log")))
        raise
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=2, help="requests per client (at least 8 in all per level)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-recheck", dest="recheck", action="store_false", help="skip the second direct run")
    args = parser.parse_args()
    model = ensure_joined(QWEN_CODER_05B, Path.home() / ".cache" / "yun-bench")
    with tempfile.TemporaryDirectory(prefix="yun-engine-bench-") as tmp_name:
        tmp = Path(tmp_name)
        before = run_direct(model, tmp, args)
        yun = run_yun(model, tmp, args)
        after = run_direct(model, tmp, args) if args.recheck else before

    print(f"\n{MODEL} via xllamacpp, 2 threads, 8 slots; max_tokens={args.max_tokens}, >= 8 requests per level")
    print("direct = mean of the runs before and after Yun's; others = CPU share used by processes not started here")
    print(
        f"{'concurrency':>11} | {'direct tok/s':>12} | {'before/after':>13} | {'yun tok/s':>9} | {'ratio':>6} | "
        f"{'TTFT p50 ms d/y':>15} | {'others max':>10}"
    )
    rows = []
    for b, a, y in zip(before, after, yun, strict=True):
        direct = (b["tokens_per_s"] + a["tokens_per_s"]) / 2
        ratio = y["tokens_per_s"] / direct
        others = max(x["others_pct"] for x in (b, y, a))
        noisy = abs(b["tokens_per_s"] / a["tokens_per_s"] - 1) > 0.1 or others > 10
        ttft = "/".join("-" if x["ttft_p50_s"] is None else f"{1000 * x['ttft_p50_s']:.0f}" for x in (b, y))
        ba = f"{b['tokens_per_s']:.1f}/{a['tokens_per_s']:.1f}" + ("*" if noisy else " ")
        print(
            f"{b['concurrency']:>11} | {direct:12.1f} | {ba:>13} | {y['tokens_per_s']:9.1f} | {ratio:6.3f} | "
            f"{ttft:>15} | {others:9.0f}%"
        )
        row = {"concurrency": b["concurrency"], "direct_before": b, "direct_after": a, "yun": y, "ratio": ratio}
        rows.append({**row, "noisy": noisy})
    if not all(x["all_counted_by_usage"] for x in before + after + yun):
        print("note: some streams had no usage chunk; their tokens were counted as content chunks")
    tokens = {x["completion_tokens"] for x in before + after + yun if x["concurrency"] == 1}
    if len(tokens) > 1:
        print(f"note: direct and Yun generated different token counts at c=1: {sorted(tokens)}")
    clean = [r for r in rows if not r["noisy"]]
    if any(r["noisy"] for r in rows):
        print("* other load: direct before/after differ by > 10% or others used > 10% of the machine in one of")
        print("  the three runs; that ratio is left out of the verdict")
    if clean:
        worst = min(r["ratio"] for r in clean)
        verdict = "MET" if worst >= 0.95 else "MISSED"
        print(f"target yun >= 0.95 x direct: worst ratio {worst:.3f} over {len(clean)} clean level(s): {verdict}")
    else:
        print("target yun >= 0.95 x direct: INCONCLUSIVE (every level was disturbed; re-run on a quiet machine)")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"engine_throughput-{stamp}.json"
    path.write_text(json.dumps({"meta": {**vars(args), "model": str(model), "when": stamp}, "rows": rows}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
