"""Fairness: a quiet organization's time to first token while another sends 10x its traffic, against the
quiet organization's own time to first token alone, in the same run; and the same measured on the engine
alone, as the floor no gateway can go below.

Run (about 2 minutes with the tiny model, 4 with qwen; needs `wrk`: apt-get install -y wrk):
    .venv/bin/python bench/fairness.py [--requests 20] [--noisy 10] [--model tiny|qwen|PATH]
                                       [--threads 2] [--parallel 4] [--replicas 1] [--same-prompt]

What it does:
- starts `yun serve --no-default-models` (fresh temp data dir, YUN_ENGINE__THREADS/PARALLEL from
  `--threads`/`--parallel`) and adds the model as `fair` (`--replicas` replicas, 1 by default), two
  organizations with credits and a key each; and, beside it, Yun's replica worker alone with the same
  model and settings (the engine called directly; the idle one of the two costs next to nothing);
- through Yun: the quiet organization sends `--requests` streamed requests one after another, alone, then
  again while the noisy organization keeps `--noisy` streams going at once (10x the quiet one's one);
- the engine alone (one replica): the same, with the noisy load sent straight to the worker, first with
  as many streams as Yun lets a busy tenant hold on one replica beside a quiet one (`--parallel` - 1: the
  gateway keeps the last slot for the tenant that holds none), then with `--noisy` (what the engine does
  with no gateway). With `--replicas 2` or more Yun keeps the two tenants on replicas of their own
  (cluster/share.py), which no single engine can do: compare `--replicas 2 --threads 1` (two 1-thread
  replicas on 2 cores) with the default (one 2-thread replica).

Every request carries a prompt of its own (its organization and number), as tenants' requests do: with one
prompt repeated, llama.cpp answers from its prompt cache and "time to first token alone" is one decode
step, which any neighbour's token in that step doubles (`--same-prompt` measures that case). The noisy
load comes from `wrk` (C: a few µs of CPU per streamed token; a Python client parsing 10 streams takes a
visible share of the engine's 2 cores, which a remote client would not).

Prints the quiet organization's p50 TTFT alone and contended and their ratio for each (the issue's target:
<= 1.5x through Yun), the noisy organization's requests/s, and the CPU pressure before/after (figures
from a busy machine, `some avg10` above ~10 before the run, are not worth quoting). JSON goes to
bench/results/.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_start import KEY_RE, VENV_BIN, cpu_pressure, model_file, stop, wait_until  # noqa: E402

BENCH = Path(__file__).resolve().parent
NAME = "fair"
MAX_TOKENS = 32

WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local same = os.getenv("BENCH_SAME_PROMPT") == "1"
local n = 0

request = function()
  n = n + 1
  local prompt = "Count to ten."
  if not same then prompt = string.format("Noisy request %d: count to ten.", n) end
  local body = string.format(
    '{"model":"%s","messages":[{"role":"user","content":"%s"}],"max_tokens":%s,"stream":true}',
    os.getenv("BENCH_MODEL"), prompt, os.getenv("BENCH_MAX_TOKENS"))
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%d,"errors":%d,"read_errors":%d}\n', summary.requests,
    e.connect + e.write + e.status + e.timeout, e.read))
end
"""


class Quiet:
    """The quiet organization: one streamed request at a time, each with a prompt of its own."""

    def __init__(self, base: str, key: str, model: str, same_prompt: bool) -> None:
        self.base, self.model, self.same_prompt = base, model, same_prompt
        self.headers = {"Authorization": f"Bearer {key}"}
        self.numbers = itertools.count()

    def ttft(self) -> float:
        """Seconds to the first content token of one streamed request (read to its end)."""
        prompt = "Count to ten." if self.same_prompt else f"Quiet request {next(self.numbers)}: count to ten."
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }
        start = time.monotonic()
        first = None
        with httpx.stream(
            "POST", f"{self.base}/v1/chat/completions", json=body, headers=self.headers, timeout=300
        ) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if first is None and line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                    first = time.monotonic() - start
        if first is None:
            raise RuntimeError("the stream carried no content")
        return first

    def p50(self, requests: int) -> tuple[float, list[float]]:
        times = [self.ttft() for _ in range(requests)]
        return statistics.median(times), times


@contextmanager
def flood(base: str, key: str, model: str, streams: int, args: argparse.Namespace, tmp: Path) -> Iterator[Any]:
    """The noisy organization as `wrk -c streams` for the life of the block: every connection sends a new
    request as soon as its answer ends. Yields a dict that holds its requests/s once the block ends."""
    script = tmp / "noisy.lua"
    script.write_text(WRK_LUA)
    env = {
        **os.environ,
        "BENCH_KEY": key,
        "BENCH_MODEL": model,
        "BENCH_MAX_TOKENS": str(MAX_TOKENS),
        "BENCH_SAME_PROMPT": "1" if args.same_prompt else "0",
    }
    cmd = ["wrk", "-t1", f"-c{streams}", "-d600s", "--timeout", "120s", "-s", str(script)]
    proc = subprocess.Popen([*cmd, f"{base}/v1/chat/completions"], env=env, stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    result: dict[str, float] = {}
    try:
        time.sleep(2.0)  # the flood fills the slots (and the gateway's queue) first
        yield result
    finally:
        proc.send_signal(signal.SIGINT)  # wrk prints its summary and exits
        out, _ = proc.communicate(timeout=60)
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(line.removeprefix("BENCH_JSON "))
    # Read errors are not failures: llama.cpp's server closes the connection after each streamed answer
    # (wrk counts that as a read error and reconnects); a refused request is a status error.
    if summary["errors"]:
        raise RuntimeError(f"the noisy organization's requests failed: {summary}")
    result["noisy_rps"] = summary["requests"] / (time.monotonic() - started)


def measure(quiet: Quiet, noisy: Callable[[int], Any], noisy_streams: list[int], requests: int) -> dict[str, Any]:
    for _ in range(3):  # warm the engine and the path
        quiet.ttft()
    alone, alone_s = quiet.p50(requests)
    out: dict[str, Any] = {"alone": alone, "alone_s": alone_s, "contended": {}}
    for streams in noisy_streams:
        with noisy(streams) as result:
            contended, contended_s = quiet.p50(requests)
        out["contended"][streams] = {"p50": contended, "times_s": contended_s, "ratio": contended / alone, **result}
    return out


def org_key(admin: httpx.Client, name: str) -> str:
    org = admin.post("/admin/orgs", json={"name": name}).json()["id"]
    admin.post(f"/admin/orgs/{org}/credits", json={"amount": "1000"}).raise_for_status()
    r = admin.post(f"/admin/orgs/{org}/keys", json={"name": name, "role": "member"})
    r.raise_for_status()
    return str(r.json()["secret"])


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = 18500 + os.getpid() % 1000
    base, engine = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    model = model_file(args.model)
    log = tmp / "yun.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "YUN_ENGINE__THREADS": str(args.threads),
        "YUN_ENGINE__PARALLEL": str(args.parallel),
    }
    argv = [str(VENV_BIN / "yun"), "serve", "--data-dir", str(tmp / "data"), "--port", str(port), "--no-default-models"]
    worker_argv = [str(VENV_BIN / "python"), "-m", "yun.engines.xllamacpp_worker", "--model", str(model)]
    worker_argv += ["--port", str(port + 1), "--threads", str(args.threads), "--parallel", str(args.parallel)]
    with log.open("wb") as out:
        yun = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    worker = subprocess.Popen(worker_argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, "yun serve")
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY_RE.findall(log.read_text())[0]}"})
        admin.post("/admin/models", json={"id": NAME, "file": str(model)}).raise_for_status()
        if args.replicas != 1:  # the model's deployment is made by the controller, in a moment
            deployments = wait_until(
                lambda: admin.get("/admin/deployments", params={"model": NAME}).json()["data"], "deployment"
            )
            scale = {"replicas": args.replicas, "max": args.replicas}
            admin.post(f"/admin/deployments/{deployments[0]['id']}/scale", json=scale).raise_for_status()
        wait_until(
            lambda: httpx.get(f"{base}/health", timeout=2).json()["models"][NAME]["healthy_replicas"] == args.replicas,
            "replicas",
        )
        wait_until(lambda: httpx.get(f"{engine}/health", timeout=2).status_code == 200, "the engine alone")
        quiet_key, noisy_key = org_key(admin, "quiet"), org_key(admin, "noisy")
        pressure_before = cpu_pressure()
        yun_figures = measure(
            Quiet(base, quiet_key, NAME, args.same_prompt),
            lambda n: flood(base, noisy_key, NAME, n, args, tmp),
            [args.noisy],
            args.requests,
        )
        engine_figures = measure(
            Quiet(engine, "none", NAME, args.same_prompt),
            lambda n: flood(engine, "none", NAME, n, args, tmp),
            sorted({max(1, args.parallel - 1), args.noisy}),
            args.requests,
        )
        return {"yun": yun_figures, "engine": engine_figures, "cpu_pressure": [pressure_before, cpu_pressure()]}
    finally:
        stop(worker)
        stop(yun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--noisy", type=int, default=10, help="concurrent streams of the noisy organization")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--threads", type=int, default=2, help="engine threads (Yun's default: 2)")
    parser.add_argument("--parallel", type=int, default=4, help="engine slots (Yun's default: 4)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of the model behind Yun")
    parser.add_argument("--same-prompt", action="store_true", help="every request the same prompt (cache hits)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk for the noisy load: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="yun-fair-") as tmp:
        result = run(args, Path(tmp))
    shape = f"{args.threads} threads, {args.parallel} slots"
    print(f"\nquiet org p50 TTFT (ms), {args.model}, {shape} per replica; Yun: {args.replicas} replica(s)")
    print(f"{'path':<7} {'noisy streams':>13} | {'alone':>6} {'contended':>9} {'ratio':>6} | noisy req/s")
    for path in ("yun", "engine"):
        figures = result[path]
        for streams, row in figures["contended"].items():
            print(
                f"{path:<7} {streams:>13} | {figures['alone'] * 1000:>6.0f} {row['p50'] * 1000:>9.0f} "
                f"{row['ratio']:>6.2f} | {row['noisy_rps']:.1f}"
            )
    ratio = result["yun"]["contended"][args.noisy]["ratio"]
    print(f"through Yun: ratio {ratio:.2f} (target <= 1.5: {'MET' if ratio <= 1.5 else 'MISSED'})")
    print(f"CPU pressure before/after {result['cpu_pressure']}")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"fairness-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "ratio": ratio, **result}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
