"""Output tokens/s through Yun vs the same xllamacpp engine called directly (target: Yun >= 95% of direct).

Run (about 7 minutes on an otherwise idle machine):
    .venv/bin/python bench/engine_throughput.py [--concurrency 1 4 8] [--pairs 5] [--rounds 1] [--max-tokens 128]

What it does:
- Starts Yun's replica worker alone (`python -m yun.engines.xllamacpp_worker`, default Qwen2.5-Coder-0.5B
  GGUF, 2 threads, 8 slots, 4096 context per slot) and `yun serve` (fresh temp data dir, default models,
  YUN_ENGINE__PARALLEL=8, so its chat replica is the same worker with the same settings). Both stay up;
  the idle one costs next to nothing (idle yun serve: ~4.5 ms of CPU per second, its workers ~0).
- At each concurrency N, `--pairs` pairs of runs: one run against the worker directly, one through Yun's
  /v1/chat/completions, alternating which goes first. A run is N httpx streaming clients each sending
  `--rounds` requests (fixed prompt, temperature 0, max_tokens, stream_options.include_usage), each on a
  fresh connection. tokens/s = completion tokens (usage chunk) / wall time of the run.
- The ratio is taken within each pair and the median over pairs is the figure: on these shared 2-core
  machines tokens/s drifts by +-10% between runs minutes apart, which an A-B-A sequence of one long run
  each (this program's first version) could not tell from Yun's own cost.
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


def measure(base: str, key: str, pids: list[int], conc: int, args: argparse.Namespace) -> dict:
    """One level against one target; `pids` are the process trees this program started (both targets)."""
    busy0, ours0 = busy_seconds(), sum(tree_cpu_seconds(p) for p in pids) + time.process_time()
    level = asyncio.run(run_level(base, key, conc, args.rounds, args.max_tokens))
    ours = sum(tree_cpu_seconds(p) for p in pids) + time.process_time() - ours0
    others = busy_seconds() - busy0 - ours  # CPU used by processes this program did not start
    level["others_pct"] = max(0.0, 100 * others / (level["wall_s"] * (os.cpu_count() or 1)))
    return level


def show_logs(*logs: Path) -> None:
    for log in logs:
        if log.is_file():
            print(f"--- tail of {log}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)


def start_direct(model: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp / "direct.log"
    worker = ["-m", "yun.engines.xllamacpp_worker", "--model", str(model), "--port", str(port)]
    proc = start([str(VENV_BIN / "python"), *worker, "--threads", "2", "--parallel", "8", "--ctx", "4096"], log)
    wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 120, yun=False)
    return proc, f"http://127.0.0.1:{port}", log


def start_yun(model: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    data = tmp / "data"
    # Reuse the joined GGUF (Yun's ensure_joined accepts a file of the right size) instead of a 470 MB copy.
    (data / "models").mkdir(parents=True)
    (data / "models" / model.name).symlink_to(model)
    port = free_port()
    log = tmp / "yun.log"
    env = {**os.environ, "YUN_ENGINE__PARALLEL": "8", "YUN_ENGINE__THREADS": "2"}
    env["YUN_ENGINE__CONTEXT_PER_SLOT"] = "4096"
    proc = start([str(VENV_BIN / "yun"), "serve", "--data-dir", str(data), "--port", str(port)], log, env)
    wait_ready(f"http://127.0.0.1:{port}/health", proc, log, 240, yun=True)
    match = KEY_RE.search(log.read_text())
    if not match:
        raise RuntimeError(f"no bootstrap key in {log}")
    return proc, f"http://127.0.0.1:{port}", match.group(0), log


def run_pairs(model: Path, tmp: Path, args: argparse.Namespace) -> list[dict]:
    """Both targets up at once (the idle one costs next to nothing); at each level, `--pairs` runs of each,
    alternating which goes first, so drift of the machine (seen here: +-10% between runs minutes apart)
    hits both sides of every pair alike."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        direct, direct_url, log = start_direct(model, tmp)
        procs.append(direct)
        logs.append(log)
        yun, yun_url, key, log = start_yun(model, tmp)
        procs.append(yun)
        logs.append(log)
        pids = [p.pid for p in procs]
        targets = {"direct": (direct_url, ""), "yun": (yun_url, key)}
        for url, k in targets.values():  # warm-up: first-request costs stay out of the numbers
            asyncio.run(run_level(url, k, 1, 1, 8))
        levels = []
        for conc in args.concurrency:
            pairs = []
            for i in range(args.pairs):
                order = ("direct", "yun") if i % 2 == 0 else ("yun", "direct")
                pair = {name: measure(*targets[name], pids, conc, args) for name in order}
                pair["ratio"] = pair["yun"]["tokens_per_s"] / pair["direct"]["tokens_per_s"]
                print(
                    f"  c={conc} pair {i + 1}: direct {pair['direct']['tokens_per_s']:.1f}, "
                    f"yun {pair['yun']['tokens_per_s']:.1f} tok/s (ratio {pair['ratio']:.3f}; others "
                    f"{max(pair['direct']['others_pct'], pair['yun']['others_pct']):.0f}%)",
                    file=sys.stderr,
                    flush=True,
                )
                pairs.append(pair)
            levels.append({"concurrency": conc, "pairs": pairs})
        return levels
    except BaseException:
        show_logs(*logs)
        raise
    finally:
        for proc in reversed(procs):
            stop(proc)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--pairs", type=int, default=5, help="direct/Yun run pairs per level")
    parser.add_argument("--rounds", type=int, default=1, help="requests per client per run")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    model = ensure_joined(QWEN_CODER_05B, Path.home() / ".cache" / "yun-bench")
    with tempfile.TemporaryDirectory(prefix="yun-engine-bench-") as tmp_name:
        levels = run_pairs(model, Path(tmp_name), args)

    print(f"\n{MODEL} via xllamacpp, 2 threads, 8 slots; max_tokens={args.max_tokens}; {args.pairs} pairs per level")
    print("ratio = Yun / direct tok/s within each pair (median, min-max); others = max CPU share of processes")
    print("not started here during the level (> 10%: a busy machine, the level is left out of the verdict)")
    print(
        f"{'concurrency':>11} | {'direct tok/s':>12} | {'yun tok/s':>9} | {'ratio median':>12} | {'min-max':>11} | "
        f"{'TTFT p50 ms d/y':>15} | {'others max':>10}"
    )
    rows = []
    for level in levels:
        pairs = level["pairs"]
        ratios = sorted(p["ratio"] for p in pairs)
        direct = statistics.mean(p["direct"]["tokens_per_s"] for p in pairs)
        yun = statistics.mean(p["yun"]["tokens_per_s"] for p in pairs)
        others = max(max(p["direct"]["others_pct"], p["yun"]["others_pct"]) for p in pairs)
        ttft = [
            statistics.median([p[n]["ttft_p50_s"] for p in pairs if p[n]["ttft_p50_s"] is not None] or [0.0])
            for n in ("direct", "yun")
        ]
        median = statistics.median(ratios)
        print(
            f"{level['concurrency']:>11} | {direct:12.1f} | {yun:9.1f} | {median:12.3f} | "
            f"{ratios[0]:.3f}-{ratios[-1]:.3f} | {_ms(ttft[0]) + '/' + _ms(ttft[1]):>15} | {others:9.0f}%"
        )
        rows.append({**level, "ratio_median": median, "noisy": others > 10})
    every = [x for level in levels for p in level["pairs"] for x in (p["direct"], p["yun"])]
    if not all(x["all_counted_by_usage"] for x in every):
        print("note: some streams had no usage chunk; their tokens were counted as content chunks")
    clean = [r for r in rows if not r["noisy"]]
    if clean:
        worst = min(r["ratio_median"] for r in clean)
        verdict = "MET" if worst >= 0.95 else "MISSED"
        print(
            f"target yun >= 0.95 x direct: worst median ratio {worst:.3f} over {len(clean)} clean level(s): {verdict}"
        )
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
