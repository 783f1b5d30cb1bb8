"""Cold start: time to first token for a request to a deployment at zero replicas, against the warm time
to first token of the same deployment, in the same run.

Run (about a minute with the tiny model; the default Qwen 0.5B takes a few seconds more per run):
    .venv/bin/python bench/cold_start.py [--runs 5] [--warm 3] [--model tiny|qwen|PATH]

What it does:
- starts `yun serve --no-default-models` (fresh temp data dir, SQLite: the gateway publishes its load in
  the database, the controller in the same process reads it) and adds the model as `cold`, whose
  deployment gets min 0 and an idle timeout of 1 s (drain 0 s);
- per run: waits until the deployment is at zero (desired 0, no replica left, not even a draining one,
  which a request would take back into rotation), then sends one streamed chat request and times its
  first content token (cold TTFT), then `--warm` more requests on the replica it started (warm TTFT);
- splits each cold start with the replica registry's times: request -> replica placed (the gateway
  publishes its queued request, the controller reads it and scales 0 -> 1), placed -> ready (the engine
  loads the model), ready -> first token (the gateway routes to it and the first token is generated).

Prints one row per run and the medians, the cold/warm ratio, and the CPU pressure (`some avg10` of
/proc/pressure/cpu) before and after: figures from a busy machine (above ~10) are not worth quoting.
JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
VENV_BIN = BENCH.parent / ".venv" / "bin"
KEY_RE = re.compile(r"yun-[A-Za-z0-9_-]{43}")
NAME = "cold"
WAIT_S = 300.0


def model_file(choice: str) -> Path:
    """The GGUF to deploy: the tests' tiny model, the default chat model (joined once into the tests'
    model cache, as the e2e tier does), or a path."""
    sys.path.insert(0, str(BENCH.parent))
    from tests.support.tiny_model import cache_root, tiny_model_path

    if choice == "tiny":
        return tiny_model_path()
    if choice == "qwen":
        from yun.catalog.bundled import QWEN_CODER_05B, ensure_joined

        return ensure_joined(QWEN_CODER_05B, cache_root() / "models")
    return Path(choice)


def wait_until(check: Any, what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (a clean shutdown), then SIGKILL if it has not exited within a minute."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_pressure() -> float:
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return float("nan")
    return float(dict(kv.split("=") for kv in line.split()[1:])["avg10"])


def first_token_s(base: str, key: str) -> tuple[float, float]:
    """(wall-clock start, seconds to the first content token) of one streamed chat request."""
    body = {"model": NAME, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "stream": True}
    start_wall, start = time.time(), time.monotonic()
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_S
    ) as r:
        r.raise_for_status()
        lines = r.iter_lines()
        for line in lines:
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                ttft = time.monotonic() - start
                for _ in lines:  # read it to the end: the slot is free for the next request
                    pass
                return start_wall, ttft
    raise RuntimeError("the stream carried no content")


def at_zero(base: str, admin: httpx.Client) -> bool:
    """Desired 0 and no replica left at all: not even one still draining, which a request would take back
    into rotation (no cold start to measure)."""
    health = httpx.get(f"{base}/health", timeout=5).json()
    d = health["deployments"][NAME]
    left = admin.get(f"/admin/deployments/{NAME}").json()["replicas"]
    return bool(d["desired"] == 0 and health["models"][NAME]["replicas"] == [] and not left)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = 18000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    log = tmp / "yun.log"
    env = {**os.environ, "YUN_ENGINE__DRAIN_S": "0", "HF_HUB_OFFLINE": "1"}
    argv = [str(VENV_BIN / "yun"), "serve", "--data-dir", str(tmp / "data"), "--port", str(port)]
    with log.open("wb") as out:
        yun = subprocess.Popen([*argv, "--no-default-models"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, "yun serve")
        key = KEY_RE.findall(log.read_text())[0]
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        path = model_file(args.model)
        r = admin.post("/admin/models", json={"id": NAME, "file": str(path)})
        r.raise_for_status()
        wait_until(lambda: admin.get(f"/admin/deployments/{NAME}").status_code == 200, "its deployment")
        admin.post(f"/admin/deployments/{NAME}/scale", json={"min": 0}).raise_for_status()
        admin.patch(f"/admin/deployments/{NAME}", json={"idle_timeout_s": 1}).raise_for_status()
        pressure_before = cpu_pressure()
        rows = []
        for i in range(args.runs):
            wait_until(lambda: at_zero(base, admin), "the deployment at zero")
            sent, cold = first_token_s(base, key)
            replica = admin.get(f"/admin/deployments/{NAME}").json()["replicas"][0]
            placed, ready = parse_time(replica["created_at"]), parse_time(replica["ready_at"])
            warm = [first_token_s(base, key)[1] for _ in range(args.warm)]
            rows.append(
                {
                    "cold_ttft_s": cold,
                    "warm_ttft_s": statistics.median(warm),
                    "to_placed_s": placed - sent,
                    "loading_s": ready - placed,
                    "ready_to_token_s": sent + cold - ready,
                }
            )
            print(f"  run {i + 1}/{args.runs} done", file=sys.stderr, flush=True)
        return {"model": str(path), "rows": rows, "cpu_pressure": [pressure_before, cpu_pressure()]}
    finally:
        stop(yun)


def print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    print(f"\nmodel {result['model']}; times in ms")
    print(f"{'run':>3} | {'cold TTFT':>9} | {'warm TTFT':>9} | {'to placed':>9} {'loading':>8} {'ready->token':>12}")
    for i, r in enumerate(rows, 1):
        print(
            f"{i:>3} | {1000 * r['cold_ttft_s']:9.0f} | {1000 * r['warm_ttft_s']:9.1f} | "
            f"{1000 * r['to_placed_s']:9.0f} {1000 * r['loading_s']:8.0f} {1000 * r['ready_to_token_s']:12.0f}"
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(
        f"med | {1000 * med['cold_ttft_s']:9.0f} | {1000 * med['warm_ttft_s']:9.1f} | "
        f"{1000 * med['to_placed_s']:9.0f} {1000 * med['loading_s']:8.0f} {1000 * med['ready_to_token_s']:12.0f}"
    )
    print(f"cold / warm TTFT (medians): {med['cold_ttft_s'] / med['warm_ttft_s']:.0f}x")
    before, after = result["cpu_pressure"]
    print(f"CPU pressure (some avg10) before {before:.1f}, after {after:.1f} (above ~10: a busy machine, re-run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="cold starts measured (default 5)")
    parser.add_argument("--warm", type=int, default=3, help="warm requests after each cold start (default 3)")
    parser.add_argument(
        "--model", default="tiny", help="tiny (test model), qwen (the default chat model) or a GGUF path"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yun-cold-") as tmp:
        result = run(args, Path(tmp))
    print_table(result)
    out = BENCH / "results" / f"cold_start-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), **result}, indent=2))
    print(f"raw numbers: {out}")


if __name__ == "__main__":
    main()
