"""Yun against LiteLLM's proxy, side by side, on the same fast fake upstream and the same CPU pinning.

Run (about 5 minutes, plus 1-2 minutes to install LiteLLM on the first run; needs `wrk`):
    .venv/bin/python bench/litellm_compare.py [--duration 10] [--concurrency 1 16 64]

Follows /work/shared/BENCH.md and reuses bench/gateway_overhead.py (pinning, busy loops, wrk, /proc CPU):
- core 0: bench/fake_upstream.py and `wrk`; core 1: the gateway under test, one process, one worker:
  (b) `yun serve --no-default-models` on a fresh data dir, model "fake" -> the fake upstream, called with
      an organization key (credits, a price, RPM/TPM limits), so every request takes the full path:
      auth, rate limits, credit reservation, metering;
  (c) LiteLLM's proxy (`litellm --num_workers 1`, model "fake" -> `openai/fake` at the fake upstream),
      installed into bench/.venv-litellm on the first run. Master-key mode: its database mode (virtual
      keys, budgets, spend tracking) needs Prisma engine binaries that cannot be downloaded here, so
      LiteLLM does no per-key accounting in this comparison while Yun does.
- Both gateways run during the whole measurement, each idle while the other is loaded; for every
  (mode, concurrency) the upstream is loaded (a) directly, then through Yun, then through LiteLLM, back to back.

Printed: requests/s, p50/p95/p99 ms, added p50/p99 vs direct, CPU ms per request of the gateway's process
tree, the share of core 1 used by anything else (>5%: a busy machine, re-run), and Yun/LiteLLM ratios of
requests/s and CPU per request. JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from gateway_overhead import (
    BENCH,
    BUSY,
    PY,
    WRK_LUA,
    Processes,
    core1_busy_seconds,
    free_port,
    run_wrk,
    sanity_check,
    start_yun,
    tree_cpu_seconds,
    wait_until,
    yun_org_key,
)

LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]"
LITELLM_ENV = {  # without these, importing litellm fetches cost maps and other data from the network
    f"LITELLM_LOCAL_{name}": "True"
    for name in ("MODEL_COST_MAP", "ANTHROPIC_BETA_HEADERS", "BLOG_POSTS", "POLICY_TEMPLATES", "AUTOROUTER_PRESETS")
}
INSTALL_TIMEOUT_S = 300
GATEWAYS = ("yun", "litellm")


def ensure_litellm() -> Path:
    """bench/.venv-litellm/bin/litellm, installing LiteLLM's proxy there first if it is missing."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(
        f"installing {LITELLM_SPEC} into {LITELLM_VENV} (first run only, 1-2 minutes)...", file=sys.stderr, flush=True
    )
    shutil.rmtree(LITELLM_VENV, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120)
        pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", LITELLM_SPEC]
        done = subprocess.run(pip, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"pip install {LITELLM_SPEC} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)  # no half-installed venv for the next run to trust
        raise
    if not exe.exists():
        raise RuntimeError(f"{LITELLM_SPEC} installed but {exe} is missing")
    return exe


def litellm_version() -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def start_litellm(procs: Processes, exe: Path, tmp: Path, upstream: str, port: int) -> tuple[subprocess.Popen, str]:
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        "      model: openai/fake\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-fake-upstream\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    log = tmp / "litellm.log"
    args = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    # `env` execs LiteLLM in place, so the pid (and process group) is LiteLLM's own
    proc = procs.start(1, ["env", *(f"{k}={v}" for k, v in LITELLM_ENV.items()), *args], log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        return httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200

    wait_until(ready, "litellm /health/liveliness", timeout=180)
    return proc, master_key


def yun_balance(base: str, admin_key: str, org: str) -> float:
    """The organization's balance in USD (settled charges only, reservations not included)."""
    r = httpx.get(f"{base}/admin/orgs/{org}", headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    r.raise_for_status()
    return int(r.json()["balance"]["balance_nanodollars"]) / 1e9


def measure(args: argparse.Namespace, script: Path, urls: dict[str, str], keys: dict[str, str], pids: dict[str, int]):
    """urls/keys: "direct", "yun", "litellm"; pids: "yun", "litellm", "busy" (core 1's busy loop)."""
    rows = []
    for stream in (False, True):
        mode = "stream" if stream else "non-stream"
        for name in ("direct", *GATEWAYS):  # warm connection pools, lazy imports and caches first
            run_wrk(script, urls[name], keys[name], stream, 16, 2)
        for conc in args.concurrency:
            direct = run_wrk(script, urls["direct"], "", stream, conc, args.duration)
            rows.append({"gateway": "direct", "mode": mode, "concurrency": conc, "wrk": direct})
            for name in GATEWAYS:
                cpu0 = {k: tree_cpu_seconds(pid) for k, pid in pids.items()}
                core0 = core1_busy_seconds()
                res = run_wrk(script, urls[name], keys[name], stream, conc, args.duration)
                cpu = {k: tree_cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
                # the idle gateway's background work counts as "others" too: it is not the one measured
                others = core1_busy_seconds() - core0 - cpu["busy"] - cpu[name]
                row = {
                    "gateway": name,
                    "mode": mode,
                    "concurrency": conc,
                    "wrk": res,
                    "cpu_ms_per_request": 1000 * cpu[name] / max(1, res["requests"]),
                    "core1_others_pct": max(0.0, 100 * others / (res["duration_us"] / 1e6)),
                    "idle_gateway_cpu_s": sum(v for k, v in cpu.items() if k not in (name, "busy")),
                }
                for p in (50, 95, 99):
                    row[f"added_p{p}_ms"] = (res[f"p{p}_us"] - direct[f"p{p}_us"]) / 1000
                rows.append(row)
            print(f"  done: {mode} c={conc}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print("\nlatency in ms from wrk; added = gateway - direct at the same percentile (same mode and concurrency);")
    print("CPU = the gateway's process tree; core 1 others = share of the gateway's core used by anything else")
    print("(the idle gateway included; >5%: a busy machine, re-run). LiteLLM in master-key mode (no DB: no spend")
    print("tracking), Yun with an org key (auth, RPM/TPM limits, credit reservation, metering on every request).")
    head = (
        f"{'gateway':<8}| {'mode':<10}| {'conc':>4} | {'req/s':>7} | {'p50':>8} {'p95':>8} {'p99':>8} | "
        f"{'added p50':>9} {'p99':>8} | {'CPU ms/req':>10} | {'core 1 others':>13}"
    )
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        w = r["wrk"]
        if last is not None and (r["mode"], r["concurrency"]) != last:
            print()
        last = (r["mode"], r["concurrency"])
        pct = " ".join(f"{w[f'p{p}_us'] / 1000:8.2f}" for p in (50, 95, 99))
        if r["gateway"] == "direct":
            extra = f"{'':>9} {'':>8} | {'':>10} | {'':>13}"
        else:
            extra = (
                f"{r['added_p50_ms']:+9.2f} {r['added_p99_ms']:+8.2f} | {r['cpu_ms_per_request']:10.3f} | "
                f"{r['core1_others_pct']:12.0f}%"
            )
        print(f"{r['gateway']:<8}| {r['mode']:<10}| {r['concurrency']:>4} | {w['rps']:7.0f} | {pct} | {extra}")
        if w["socket_errors"] or w["status_errors"]:
            print(f"  !! {w['socket_errors']} socket errors, {w['status_errors']} non-2xx answers")

    print("\nYun / LiteLLM (req/s: higher is better for Yun; CPU ms/req: lower is better for Yun)")
    print(f"{'mode':<10}| {'conc':>4} | {'req/s ratio':>11} | {'CPU/req ratio':>13} | {'LiteLLM CPU / Yun CPU':>21}")
    by_key = {(r["gateway"], r["mode"], r["concurrency"]): r for r in rows}
    for r in rows:
        if r["gateway"] != "yun":
            continue
        lite = by_key[("litellm", r["mode"], r["concurrency"])]
        rps = r["wrk"]["rps"] / max(1e-9, lite["wrk"]["rps"])
        cpu = r["cpu_ms_per_request"] / max(1e-9, lite["cpu_ms_per_request"])
        print(f"{r['mode']:<10}| {r['concurrency']:>4} | {rps:10.1f}x | {cpu:12.3f}x | {1 / cpu:20.1f}x")


def run(args: argparse.Namespace, tmp: Path, procs: Processes, litellm_exe: Path, version: str):
    """Start everything (into `procs`), measure, and return (rows, USD Yun metered during the measurement)."""
    busy = [procs.start(cpu, [PY, "-c", BUSY]) for cpu in (0, 1)]
    up_port, yun_port, lite_port = free_port(), free_port(), free_port()
    procs.start(0, [PY, str(BENCH / "fake_upstream.py"), "--port", str(up_port)], tmp / "upstream.log")
    upstream = f"http://127.0.0.1:{up_port}"
    wait_until(lambda: httpx.get(f"{upstream}/health", timeout=2).status_code == 200, "fake upstream")

    yun, admin_key = start_yun(procs, tmp, upstream, yun_port)
    yun_base = f"http://127.0.0.1:{yun_port}"
    org, yun_key = yun_org_key(yun_base, admin_key)
    sanity_check(yun_base, yun_key)
    balance0 = yun_balance(yun_base, admin_key, org)

    litellm, master_key = start_litellm(procs, litellm_exe, tmp, upstream, lite_port)
    lite_base = f"http://127.0.0.1:{lite_port}"
    sanity_check(lite_base, master_key)

    script = tmp / "post.lua"
    script.write_text(WRK_LUA)
    print(f"yun pid {yun.pid}, litellm {version} pid {litellm.pid}; {args.duration:g}s per run", file=sys.stderr)
    rows = measure(
        args,
        script,
        {
            "direct": f"{upstream}/v1/chat/completions",
            "yun": f"{yun_base}/v1/chat/completions",
            "litellm": f"{lite_base}/v1/chat/completions",
        },
        {"direct": "", "yun": yun_key, "litellm": master_key},
        {"yun": yun.pid, "litellm": litellm.pid, "busy": busy[1].pid},
    )
    time.sleep(1)  # let the last metering writes land
    return rows, balance0 - yun_balance(yun_base, admin_key, org)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores (0: upstream + wrk, 1: the gateway)")
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install -y wrk")
    started = time.monotonic()
    litellm_exe = ensure_litellm()
    version = litellm_version()
    load = [os.getloadavg()[0]]
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    procs = Processes()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="yun-vs-litellm-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            rows, spent = run(args, tmp, procs, litellm_exe, version)
        finally:
            procs.stop_all()
            # Keep the logs of a failed run, or of one where a gateway timed out or answered errors.
            if not rows or any(r["wrk"]["socket_errors"] or r["wrk"]["status_errors"] for r in rows):
                for log in sorted(tmp.glob("*.log")):
                    shutil.copy(log, results / f"litellm_compare-{stamp}-{log.name}")
                print(f"kept the logs as {results}/litellm_compare-{stamp}-*.log", file=sys.stderr)
    load.append(os.getloadavg()[0])
    print_table(rows)
    yun_requests = sum(r["wrk"]["requests"] for r in rows if r["gateway"] == "yun")
    print(f"\nYun metered the run: balance down by ${spent:.6f} over {yun_requests} measured requests (plus warm-ups)")
    print(f"litellm {version}; total time {time.monotonic() - started:.0f} s")
    print(f"1-minute load average at start/end: {load[0]:.2f}/{load[1]:.2f} (this run itself adds about 3-4)")
    path = results / f"litellm_compare-{stamp}.json"
    meta = {
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "when": stamp,
        "loadavg": load,
        "litellm_version": version,
        "litellm_mode": "master key (no database)",
        "yun_spent_usd": spent,
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
