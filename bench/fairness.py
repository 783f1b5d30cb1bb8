"""Fairness: a quiet organization's time to first token while another sends 10x its traffic, against the
quiet organization's own time to first token alone, in the same run.

Run (about a minute with the tiny model):
    .venv/bin/python bench/fairness.py [--requests 20] [--noisy 10] [--model tiny|qwen|PATH]

What it does:
- starts `yun serve --no-default-models` (fresh temp data dir) and adds the model as `fair` (one replica,
  its default slots), two organizations with credits and a key each;
- alone: the quiet organization sends `--requests` streamed requests one after another; its time to first
  token (TTFT) per request;
- contended: the noisy organization (another client process) keeps `--noisy` streams going at once (10x
  the quiet one's one) while the quiet organization sends the same requests again;
- prints the quiet organization's p50 TTFT in both phases and their ratio (the issue's target: <= 1.5x),
  with the noisy organization's requests completed, and the CPU pressure before/after (figures from a
  busy machine, `some avg10` above ~10, are not worth quoting). JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_start import KEY_RE, VENV_BIN, cpu_pressure, model_file, wait_until  # noqa: E402

BENCH = Path(__file__).resolve().parent
NAME = "fair"
BODY = {"model": NAME, "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 32, "stream": True}


def ttft(base: str, key: str) -> float:
    """Seconds to the first content token of one streamed request (read to its end)."""
    start = time.monotonic()
    first = None
    with httpx.stream(
        "POST", f"{base}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=300
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                first = time.monotonic() - start
    if first is None:
        raise RuntimeError("the stream carried no content")
    return first


def flood_process(base: str, key: str, streams: int, stop: Any, done: Any) -> None:
    """The noisy organization: `streams` streamed requests in flight at all times until `stop` is set."""

    def flood() -> None:
        while not stop.is_set():
            ttft(base, key)
            with done.get_lock():
                done.value += 1

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


def org_key(admin: httpx.Client, name: str) -> str:
    org = admin.post("/admin/orgs", json={"name": name}).json()["id"]
    admin.post(f"/admin/orgs/{org}/credits", json={"amount": "1000"}).raise_for_status()
    r = admin.post(f"/admin/orgs/{org}/keys", json={"name": name, "role": "member"})
    r.raise_for_status()
    return str(r.json()["secret"])


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = 18500 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    log = tmp / "yun.log"
    argv = [str(VENV_BIN / "yun"), "serve", "--data-dir", str(tmp / "data"), "--port", str(port), "--no-default-models"]
    with log.open("wb") as out:
        yun = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_until(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, "yun serve")
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY_RE.findall(log.read_text())[0]}"})
        admin.post("/admin/models", json={"id": NAME, "file": str(model_file(args.model))}).raise_for_status()
        wait_until(
            lambda: httpx.get(f"{base}/health", timeout=2).json()["models"][NAME]["healthy_replicas"] == 1, "replica"
        )
        quiet, noisy = org_key(admin, "quiet"), org_key(admin, "noisy")
        pressure_before = cpu_pressure()
        for _ in range(3):  # warm the engine and the path
            ttft(base, quiet)
        alone = [ttft(base, quiet) for _ in range(args.requests)]
        # The noisy organization is another client: its own process (its threads in this one would share
        # the quiet client's GIL and delay the quiet client's own reading of its first token).
        noisy_done = mp.get_context("spawn").Value("i", 0)
        stop = mp.get_context("spawn").Event()
        flood = mp.get_context("spawn").Process(target=flood_process, args=(base, noisy, args.noisy, stop, noisy_done))
        flood.start()
        time.sleep(2.0)  # the flood fills the slots and the gateway's queue first
        contended = [ttft(base, quiet) for _ in range(args.requests)]
        stop.set()
        flood.join(300)
        if flood.is_alive():
            flood.kill()
        return {
            "alone_s": alone,
            "contended_s": contended,
            "noisy_completed": noisy_done.value,
            "cpu_pressure": [pressure_before, cpu_pressure()],
        }
    finally:
        yun.send_signal(signal.SIGINT)
        try:
            yun.wait(60)
        except subprocess.TimeoutExpired:
            yun.kill()
            yun.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--noisy", type=int, default=10, help="concurrent streams of the noisy organization")
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yun-fair-") as tmp:
        result = run(args, Path(tmp))
    alone, contended = statistics.median(result["alone_s"]), statistics.median(result["contended_s"])
    ratio = contended / alone
    print(f"quiet org p50 TTFT alone {alone * 1000:.0f} ms, with a {args.noisy}x neighbour {contended * 1000:.0f} ms")
    print(
        f"ratio {ratio:.2f} (target <= 1.5: {'MET' if ratio <= 1.5 else 'MISSED'}); noisy completed "
        f"{result['noisy_completed']}; CPU pressure before/after {result['cpu_pressure']}"
    )
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"fairness-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "ratio": ratio, **result}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
