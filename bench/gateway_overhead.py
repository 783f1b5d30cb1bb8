"""Latency and CPU that Yun adds per request in front of a fast OpenAI-compatible upstream.

Run (about 2.5 minutes; needs `wrk`: apt-get install -y wrk):
    .venv/bin/python bench/gateway_overhead.py [--duration 10] [--concurrency 1 16 64] [--api responses|messages]

`--api responses` sends the same request to /v1/responses instead (stored, OpenAI's default), `--api
messages` to Anthropic's /v1/messages, against the same direct baseline: the upstream's chat completions,
which is what Yun calls underneath.

What it does, following /work/shared/BENCH.md:
- core 0: bench/fake_upstream.py and the load generator `wrk` (Lua script for POST bodies);
  core 1: `yun serve --no-default-models` (fresh temp data dir, model "fake" -> the fake upstream),
  called with an organization key that has RPM/TPM limits, credits and a price for "fake": every
  request takes the full path (auth, rate limits, credit hold, metering, charge).
- Both cores are kept awake by SCHED_IDLE busy loops, so wake-up latency does not hide small overheads.
- For stream and non-stream, at each concurrency (`wrk -t1 -cN`), the upstream is measured directly and
  then through Yun, back to back in the same run.
- `--api messages`: through Yun the same conversation is sent to Anthropic's POST /v1/messages (translated
  to the chat body, answered as Anthropic's message or events); the direct baseline stays the upstream's
  chat completion, so "added" includes both translations.

Printed per row: requests/s, p50/p95/p99 latency (ms) direct and through Yun, the added latency
(Yun - direct at the same percentile) and Yun's CPU ms per request (utime+stime of `yun serve` and
its children from /proc, before/after the run, over requests completed). The target is <= 1 ms
added p50 and <= 5 ms added p99 at concurrency 1. JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
VENV_BIN = BENCH.parent / ".venv" / "bin"
PY = str(VENV_BIN / "python")
KEY_RE = re.compile(r"yun-[A-Za-z0-9_-]{43}")
TICK = os.sysconf("SC_CLK_TCK")
BODY = {"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
# `--api responses` / `--api messages`: the same request on /v1/responses (stored, OpenAI's default) or
# Anthropic's /v1/messages, against the same direct baseline (the upstream's chat completions, which is
# what Yun calls underneath).
RESPONSES_BODY = {"model": "fake", "input": "Say hello.", "max_output_tokens": 16}
MESSAGES_BODY = BODY  # the same conversation is a valid Messages body (max_tokens is required there too)
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
BODIES = {"chat": BODY, "responses": RESPONSES_BODY, "messages": MESSAGES_BODY}

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p95_us":%.1f,"p99_us":%.1f,' ..
    '"socket_errors":%d,"status_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""
BUSY = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Everything started here, each in its own process group so a group kill takes its children.

    Not in a new session: with sched_autogroup each session is its own CFS group, and a SCHED_IDLE
    busy loop alone in a group competes at full weight (it took ~half of each core and added ~3 ms
    scheduling delays). In one session it yields to everything else, as intended.
    """

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []
        self.direct: str | None = None
        """The fake upstream's address when Yun placed it (`--via deployment`)."""

    def start(
        self, cpu: int, args: list[str], log: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb") if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
            env={**os.environ, **(env or {})},
        )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in reversed(self.started):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime (+ reaped children's) of `pid` and all its live descendants, but not a fake upstream
    it runs as a deployment's replica (`--via deployment`: that is the engine's time, not Yun's)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            if b"fake_upstream.py" in Path(f"/proc/{p}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / TICK


def core1_busy_seconds() -> float:
    """Non-idle CPU time of core 1 (with the busy loop running, that is all of it)."""
    line = next(x for x in Path("/proc/stat").read_text().splitlines() if x.startswith("cpu1 "))
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in line.split()[1:8])
    return (user + nice + system + irq + softirq) / TICK


def wait_until(check: object, what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()  # type: ignore[operator]
            if result:
                return result
        except (httpx.HTTPError, OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def add_fake_model(bin_dir: Path, base: str, admin_key: str, upstream: str, data: Path) -> None:
    """Register "fake" with the running server: `yun models add` over HTTP; a baseline checkout from before
    the CLI spoke HTTP (its server has no /admin/models) writes the data dir instead, which its server
    reads within seconds."""
    add = [str(bin_dir / "yun"), "models", "add", "fake", "--url", upstream, "--upstream-model", "fake"]
    probe = httpx.get(f"{base}/admin/models", headers={"Authorization": f"Bearer {admin_key}"}, timeout=10)
    if probe.status_code == 200:
        env = {**os.environ, "YUN_URL": base, "YUN_API_KEY": admin_key}
        done = subprocess.run(add, capture_output=True, text=True, env=env)
    else:
        done = subprocess.run([*add, "--data-dir", str(data)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"yun models add failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")


def start_yun(
    procs: Processes, tmp: Path, upstream: str | None, port: int, bin_dir: Path = VENV_BIN
) -> tuple[subprocess.Popen[bytes], str]:
    """`yun serve` from `bin_dir` (this checkout's venv unless told), on core 1, model "fake" -> `upstream`
    (an external model), or with no upstream (`--via deployment`) a deployment whose replica is the fake
    upstream (see deploy_fake)."""
    data = tmp / "data"
    log = tmp / "yun.log"
    yun = procs.start(
        1,
        [str(bin_dir / "yun"), "serve", "--data-dir", str(data), "--port", str(port), "--no-default-models"],
        log,
        env={"YUN_ENGINE__DRAIN_S": "0"},
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if yun.poll() is not None:
            raise RuntimeError(f"yun serve exited ({yun.returncode}); see {log}:\n{log.read_text()[-2000:]}")
        return httpx.get(f"{base}/health", timeout=2).status_code == 200

    wait_until(up, "yun serve /health")
    match = KEY_RE.search(log.read_text())
    if not match:
        raise RuntimeError(f"no bootstrap key in {log}")
    if upstream is not None:
        add_fake_model(bin_dir, base, match.group(0), upstream, data)
    else:
        procs.direct = deploy_fake(base, match.group(0), data)

    def ready() -> bool:
        up()
        health = httpx.get(f"{base}/health", timeout=2).json()
        return health.get("status") == "ok" and "fake" in health.get("models", {})

    wait_until(ready, "model fake in yun serve /health")
    return yun, match.group(0)


def deploy_fake(base: str, admin_key: str, data: Path) -> str:
    """`--via deployment`: "fake" becomes a local model whose deployment's replica is the fake upstream,
    placed by Yun's controller (engine command, on core 0) and found by the gateway in the replica
    registry, as every replica Yun runs is. Returns the replica's own address (the direct baseline)."""
    sys.path.insert(0, str(BENCH.parent))
    from tests.support.tiny_model import tiny_model_path  # a GGUF to stand in the catalog; never loaded

    env = {**os.environ, "YUN_URL": base, "YUN_API_KEY": admin_key}
    add = [str(VENV_BIN / "yun"), "models", "add", "fake", "--file", str(tiny_model_path())]
    done = subprocess.run(add, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"yun models add failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    command = ["taskset", "-c", "0", PY, str(BENCH / "fake_upstream.py"), "--port", "{port}"]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10) as c:
        wait_until(lambda: c.get("/admin/deployments/fake").status_code == 200, "deployment fake")
        r = c.patch("/admin/deployments/fake", json={"engine": "vllm", "command": command})
        if r.status_code >= 300:
            raise RuntimeError(f"PATCH /admin/deployments/fake: {r.status_code} {r.text}")
        generation = r.json()["generation"]

        def rolled() -> str | None:
            replicas = c.get("/admin/deployments/fake").json()["replicas"]
            live = [x for x in replicas if x["state"] not in ("stopped", "failed")]
            if len(live) == 1 and live[0]["generation"] == generation and live[0]["state"] == "ready":
                return str(live[0]["endpoint"])
            return None

        endpoint = wait_until(rolled, "the fake upstream as the deployment's one replica")
    return str(endpoint)


def yun_org_key(base: str, admin_key: str) -> tuple[str, str]:
    """An organization with credits, a price for "fake" and a key with RPM/TPM limits: (org id, key secret)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10) as c:

        def call(method: str, path: str, body: dict) -> dict:
            r = c.request(method, path, json=body)
            if r.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
            return r.json()

        org = call("POST", "/admin/orgs", {"name": "bench"})["id"]
        call("POST", f"/admin/orgs/{org}/credits", {"amount": "1000000"})
        call("PUT", "/admin/prices/fake", {"input": "0.1", "output": "0.2"})
        key = call("POST", f"/admin/orgs/{org}/keys", {"name": "bench", "rpm_limit": 10_000_000, "tpm_limit": 10**9})
        return org, key["secret"]


def sanity_check(base: str, key: str, api: str = "chat") -> None:
    """One request of each kind through Yun, so a broken path fails loudly instead of timing errors."""
    headers = {"Authorization": f"Bearer {key}"}
    if api == "responses":
        r = httpx.post(f"{base}/v1/responses", json=RESPONSES_BODY, headers=headers, timeout=10)
        r.raise_for_status()
        assert r.json()["usage"]["output_tokens"] == 10, r.text
        r = httpx.post(f"{base}/v1/responses", json={**RESPONSES_BODY, "stream": True}, headers=headers, timeout=10)
        r.raise_for_status()
        assert r.text.count('"response.output_text.delta"') == 10, r.text[-500:]
        assert "event: response.completed" in r.text, r.text[-500:]
        return
    if api == "messages":
        r = httpx.post(f"{base}/v1/messages", json=MESSAGES_BODY, headers=headers, timeout=10)
        r.raise_for_status()
        assert r.json()["usage"]["output_tokens"] == 10 and r.json()["type"] == "message", r.text
        r = httpx.post(f"{base}/v1/messages", json={**MESSAGES_BODY, "stream": True}, headers=headers, timeout=10)
        r.raise_for_status()
        assert r.text.count("text_delta") == 10 and r.text.rstrip().endswith('{"type":"message_stop"}'), r.text[-500:]
        return
    r = httpx.post(f"{base}/v1/chat/completions", json=BODY, headers=headers, timeout=10)
    r.raise_for_status()
    assert r.json()["usage"]["completion_tokens"] == 10, r.text
    r = httpx.post(f"{base}/v1/chat/completions", json={**BODY, "stream": True}, headers=headers, timeout=10)
    r.raise_for_status()
    assert r.text.count("word") == 10 and r.text.rstrip().endswith("data: [DONE]"), r.text[-500:]


def run_wrk(
    script: Path, url: str, key: str, stream: bool, conc: int, seconds: float, body: dict | None = None
) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": json.dumps({**(body or BODY), "stream": stream}), "BENCH_KEY": key}
    cmd = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conc}", f"-d{seconds:g}s", "--timeout", "10s", "--latency"]
    cmd += ["-s", str(script), url]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    out = proc.stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    result: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measure(args: argparse.Namespace, script: Path, direct: str, yun_url: str, key: str, pids: tuple[int, int]):
    """`pids`: yun serve and core 1's busy loop. Core 1 time used by neither is other people's load."""
    rows = []
    yun_pid, busy_pid = pids
    yun_body = BODIES[args.api]
    for stream in (False, True):
        # Warm both paths (connection pools, lazy imports, caches) before anything is recorded.
        run_wrk(script, direct, "", stream, 16, 2)
        run_wrk(script, yun_url, key, stream, 16, 2, yun_body)
        for conc in args.concurrency:
            d = run_wrk(script, direct, "", stream, conc, args.duration)
            cpu0, busy0, core0 = tree_cpu_seconds(yun_pid), tree_cpu_seconds(busy_pid), core1_busy_seconds()
            y = run_wrk(script, yun_url, key, stream, conc, args.duration, yun_body)
            cpu = tree_cpu_seconds(yun_pid) - cpu0
            others = core1_busy_seconds() - core0 - (tree_cpu_seconds(busy_pid) - busy0) - cpu
            row = {
                "mode": "stream" if stream else "non-stream",
                "concurrency": conc,
                "direct": d,
                "yun": y,
                "yun_cpu_ms_per_request": 1000 * cpu / max(1, y["requests"]),
                "core1_others_pct": max(0.0, 100 * others / (y["duration_us"] / 1e6)),
            }
            for p in (50, 95, 99):
                row[f"added_p{p}_ms"] = (y[f"p{p}_us"] - d[f"p{p}_us"]) / 1000
            rows.append(row)
            print(f"  done: {row['mode']} c={conc}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    print("\nlatency in ms; added = yun - direct at the same percentile; CPU = yun serve + children;")
    print("core 1 others = share of Yun's core used by processes not started here (>5%: a busy machine, re-run)")
    print(
        f"{'mode':<11}{'conc':>4} | {'req/s direct':>12} {'yun':>7} | {'p50 direct':>10} {'yun':>6} {'added':>6} "
        f"| {'p95 direct':>10} {'yun':>6} {'added':>6} | {'p99 direct':>10} {'yun':>6} {'added':>6} | "
        f"{'yun CPU ms/req':>14} | {'core 1 others':>13}"
    )
    for r in rows:
        d, y = r["direct"], r["yun"]
        cells = " | ".join(
            f"{d[f'p{p}_us'] / 1000:10.3f} {y[f'p{p}_us'] / 1000:6.2f} {r[f'added_p{p}_ms']:+6.2f}"
            for p in (50, 95, 99)
        )
        print(
            f"{r['mode']:<11}{r['concurrency']:>4} | {d['rps']:12.0f} {y['rps']:7.0f} | {cells} | "
            f"{r['yun_cpu_ms_per_request']:14.3f} | {r['core1_others_pct']:12.0f}%"
        )
        for name, res in (("direct", d), ("yun", y)):
            if res["socket_errors"] or res["status_errors"]:
                print(f"  !! {name}: {res['socket_errors']} socket errors, {res['status_errors']} non-2xx answers")
    c1 = [r for r in rows if r["concurrency"] == 1]
    for r in c1:
        ok = r["added_p50_ms"] <= 1.0 and r["added_p99_ms"] <= 5.0
        print(
            f"target at c=1 {r['mode']}: added p50 {r['added_p50_ms']:.2f} ms (<= 1), "
            f"p99 {r['added_p99_ms']:.2f} ms (<= 5): {'MET' if ok else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--via",
        choices=("external", "deployment"),
        default="external",
        help="external: the fake upstream is an external model; deployment: it is the one replica of a "
        "deployment Yun's controller places, routed to from the replica registry",
    )
    parser.add_argument(
        "--api",
        choices=tuple(PATHS),
        default="chat",
        help="the API called through Yun: chat (/v1/chat/completions), responses (the Responses API, stored as "
        "by default) or messages (Anthropic's /v1/messages); the direct baseline is the upstream's chat "
        "completions either way",
    )
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores (0: upstream + wrk, 1: yun)")
    load = [os.getloadavg()[0]]
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="yun-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            busy = [procs.start(cpu, [PY, "-c", BUSY]) for cpu in (0, 1)]
            up_port, yun_port = free_port(), free_port()
            if args.via == "external":
                procs.start(0, [PY, str(BENCH / "fake_upstream.py"), "--port", str(up_port)], tmp / "upstream.log")
                upstream = f"http://127.0.0.1:{up_port}"
                wait_until(lambda: httpx.get(f"{upstream}/health", timeout=2).status_code == 200, "fake upstream")
                yun, admin_key = start_yun(procs, tmp, upstream, yun_port)
            else:
                yun, admin_key = start_yun(procs, tmp, None, yun_port)
                assert procs.direct is not None
                upstream = procs.direct
            # The full request path: an organization key with RPM/TPM limits, credits and a price, so every
            # request is authenticated, rate-limited, holds credit, and is metered and charged.
            _, key = yun_org_key(f"http://127.0.0.1:{yun_port}", admin_key)
            sanity_check(f"http://127.0.0.1:{yun_port}", key, args.api)
            script = tmp / "post.lua"
            script.write_text(WRK_LUA)
            print(f"yun pid {yun.pid}; {args.duration:g}s per run; wrk -t1 -cN", file=sys.stderr)
            rows = measure(
                args,
                script,
                f"{upstream}/v1/chat/completions",
                f"http://127.0.0.1:{yun_port}{PATHS[args.api]}",
                key,
                (yun.pid, busy[1].pid),
            )
        finally:
            procs.stop_all()
    load.append(os.getloadavg()[0])
    print(f"\nthrough Yun: {PATHS[args.api]} (direct: the upstream's /v1/chat/completions)")
    print_table(rows)
    print(f"1-minute load average at start/end: {load[0]:.2f}/{load[1]:.2f} (this run itself adds about 3-4)")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"gateway_overhead-{stamp}.json"
    meta = {
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "when": stamp,
        "loadavg": load,
        "via": args.via,
        "api": args.api,
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
