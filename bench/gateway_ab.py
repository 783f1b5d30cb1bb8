"""This checkout's gateway against another checkout's (a baseline), side by side in one run.

Run (about 1 minute per pair at one concurrency; needs `wrk`):
    .venv/bin/python bench/gateway_ab.py BASELINE_DIR [--pairs 3] [--concurrency 1 16] [--duration 5]
        [--api chat|responses|messages]

BASELINE_DIR is another checkout with its own `.venv` (for example
`git worktree add /tmp/base <commit> && (cd /tmp/base && scripts/install.sh)`). Both `yun serve`s run at
once on core 1 against one fake upstream on core 0 (pinning, busy loops and wrk as in
bench/gateway_overhead.py), each with an organization key, credits, a price and RPM/TPM limits. For each
concurrency and mode, `--pairs` pairs of wrk runs, alternating which side goes first: on these shared
machines the same code measures ±25% apart between runs minutes apart, so a change is judged by
interleaved runs of both versions, never by two separate runs.

Printed per mode and concurrency: CPU ms per request, p50 ms and requests/s of each side (median over the
pairs) and new/baseline ratios. JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

from gateway_overhead import (
    BENCH,
    BODIES,
    BUSY,
    PATHS,
    PY,
    VENV_BIN,
    WRK_LUA,
    Processes,
    free_port,
    run_wrk,
    sanity_check,
    start_yun,
    tree_cpu_seconds,
    wait_until,
    yun_org_key,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="another checkout with its own .venv")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--api", choices=sorted(PATHS), default="chat", help="the API called (as gateway_overhead's)")
    args = parser.parse_args()
    sides = {"baseline": args.baseline.resolve() / ".venv" / "bin", "new": VENV_BIN}
    if not (sides["baseline"] / "yun").exists():
        sys.exit(f"no {sides['baseline'] / 'yun'}: install the baseline checkout first (scripts/install.sh)")
    procs = Processes()
    samples: dict[tuple[str, int, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="yun-ab-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            for cpu in (0, 1):
                procs.start(cpu, [PY, "-c", BUSY])
            up = free_port()
            procs.start(0, [PY, str(BENCH / "fake_upstream.py"), "--port", str(up)], tmp / "upstream.log")
            upstream = f"http://127.0.0.1:{up}"
            wait_until(lambda: httpx.get(f"{upstream}/health", timeout=2).status_code == 200, "fake upstream")
            targets = {}
            for name, bin_dir in sides.items():
                port = free_port()
                (tmp / name).mkdir()
                proc, admin_key = start_yun(procs, tmp / name, upstream, port, bin_dir)
                _, key = yun_org_key(f"http://127.0.0.1:{port}", admin_key)
                sanity_check(f"http://127.0.0.1:{port}", key)
                targets[name] = (proc.pid, f"http://127.0.0.1:{port}{PATHS[args.api]}", key)
            script = tmp / "post.lua"
            script.write_text(WRK_LUA)
            for _, url, key in targets.values():  # warm both (pools, caches, lazy imports)
                for stream in (False, True):
                    run_wrk(script, url, key, stream, 16, 2, BODIES[args.api])
            for stream in (False, True):
                mode = "stream" if stream else "non-stream"
                for conc in args.concurrency:
                    for i in range(args.pairs):
                        for name in ("baseline", "new") if i % 2 == 0 else ("new", "baseline"):
                            pid, url, key = targets[name]
                            cpu0 = tree_cpu_seconds(pid)
                            r = run_wrk(script, url, key, stream, conc, args.duration, BODIES[args.api])
                            r["cpu_ms"] = 1000 * (tree_cpu_seconds(pid) - cpu0) / max(1, r["requests"])
                            samples.setdefault((mode, conc, name), []).append(r)
                    print(f"  done: {mode} c={conc}", file=sys.stderr, flush=True)
        finally:
            procs.stop_all()

    def med(mode: str, conc: int, name: str, field: str) -> float:
        return statistics.median(r[field] for r in samples[(mode, conc, name)])

    print(
        f"\n{PATHS[args.api]}: medians over {args.pairs} interleaved pairs of {args.duration}s wrk runs; "
        f"baseline = {args.baseline}"
    )
    print(
        f"{'mode':<11}{'conc':>4} | {'CPU ms/req base':>15} {'new':>6} {'ratio':>6} | {'p50 ms base':>11} {'new':>6} | "
        f"{'req/s base':>10} {'new':>6} {'ratio':>6}"
    )
    rows = []
    for mode, conc in dict.fromkeys((m, c) for m, c, _ in samples):
        cpu = [med(mode, conc, n, "cpu_ms") for n in ("baseline", "new")]
        p50 = [med(mode, conc, n, "p50_us") / 1000 for n in ("baseline", "new")]
        rps = [med(mode, conc, n, "rps") for n in ("baseline", "new")]
        print(
            f"{mode:<11}{conc:>4} | {cpu[0]:15.3f} {cpu[1]:6.3f} {cpu[1] / cpu[0]:6.2f} | "
            f"{p50[0]:11.2f} {p50[1]:6.2f} | {rps[0]:10.0f} {rps[1]:6.0f} {rps[1] / rps[0]:6.2f}"
        )
        rows.append({"mode": mode, "concurrency": conc, "cpu_ms": cpu, "p50_ms": p50, "rps": rps})
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results / f"gateway_ab-{stamp}.json"
    raw = {f"{m}/{c}/{n}": v for (m, c, n), v in samples.items()}
    summary = {"baseline": str(args.baseline), "api": args.api, "rows": rows, "samples": raw}
    path.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
