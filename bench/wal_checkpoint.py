"""The embedded database's write path under its WAL checkpoints: what each request writes, and how long its
writes take while the checkpoint thread runs, against the same loop with no checkpoints, in one run.

Run (about 40 s):
    .venv/bin/python bench/wal_checkpoint.py [--seconds 10] [--every 0.25]

What it does, on a fresh SQLite file (migrated, one organization with credit), with the money writer the
gateway uses (store/money/writer.py):
- writes 2,000 requests (hold + settlement, the two commits each request makes) to warm the tables, then
  counts the WAL frames (pages) the next 1,000 write: the pages a checkpoint must copy per request;
- then for `--seconds` each, in the order off, on, off, on: one request after another (0.3 ms apart,
  about the pace of concurrency 1 through the gateway) with the checkpoint thread off, then on
  (`Database.start_checkpoints(--every)`, as the server runs it); the latency of each request's writes.

Prints p50 / p99 / p99.9 / max per phase, the WAL's peak frame count, and the CPU pressure; JSON goes to
bench/results/. The WAL must stay bounded with checkpoints on (it grew to 60k+ frames and was truncated
with the write lock held for 35-335 ms before the RESTART change in `Database.checkpoint`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_start import cpu_pressure  # noqa: E402
from yun.store import Database, OrganizationRepository, upgrade
from yun.store.money import HoldRequest, MoneyRepository, SettleRecord, money_writer

BENCH = Path(__file__).resolve().parent
ORG = "org-bench"


def wal_frames(path: Path) -> int:
    """Frames in the WAL now (a PASSIVE checkpoint reports them; it also copies them, harmlessly)."""
    with contextlib.closing(sqlite3.connect(path)) as c:
        return int(c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


class Requests:
    def __init__(self, db: Database) -> None:
        self.writer = money_writer(db)

    def one(self) -> None:
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        req = HoldRequest(
            request_id=rid,
            org_id=ORG,
            key_id="key-bench",
            model_id="m",
            endpoint="chat.completions",
            gateway_id="gw-bench",
            price_version=1,
            free_tokens_wanted=0,
            free_allowance=0,
            month=datetime.now(UTC).strftime("%Y-%m"),
            amount_for=lambda free: 5_000,
        )
        hold = self.writer.reserve(req).result()
        self.writer.settle(hold, SettleRecord(rid, 10, 5, 0, 0, "ok", 12, 3, 1_234, 0, 0)).result()


def phase(url: str, path: Path, seconds: float, every: float | None) -> dict[str, Any]:
    db = Database(url)
    requests = Requests(db)
    if every is not None:
        db.start_checkpoints(every)
    latencies: list[float] = []
    peak = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            start = time.perf_counter()
            requests.one()
            latencies.append(time.perf_counter() - start)
            if len(latencies) % 500 == 0 and every is not None:
                peak = max(peak, wal_frames(path))
            time.sleep(0.0003)
    finally:
        db.dispose()
    latencies.sort()

    def ms(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000

    return {
        "checkpoints": every,
        "requests": len(latencies),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": latencies[-1] * 1000,
        "peak_wal_frames": peak if every is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=0.25, help="checkpoint interval (the server's: 0.25 s)")
    args = parser.parse_args()
    pressure = [cpu_pressure()]
    with tempfile.TemporaryDirectory(prefix="yun-wal-") as tmp:
        path = Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        db = Database(url)
        OrganizationRepository(db).get_or_create(ORG, "bench")
        MoneyRepository(db).credit(ORG, "grant", 10**15, "bench")
        requests = Requests(db)
        for _ in range(2_000):
            requests.one()
        db.checkpoint(wal_limit_bytes=0)  # copied and restarted: the count below starts from an empty WAL
        requests.one()
        before = wal_frames(path)
        for _ in range(1_000):
            requests.one()
        per_request = (wal_frames(path) - before) / 1_000
        db.dispose()
        phases = [phase(url, path, args.seconds, every) for every in (None, args.every, None, args.every)]
    pressure.append(cpu_pressure())
    print(f"WAL frames written per request (hold + settlement): {per_request:.1f}")
    head = ("checkpoints", "requests", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "peak WAL")
    print(f"{head[0]:<12} " + " ".join(f"{h:>8}" for h in head[1:]))
    for p in phases:
        label = "off" if p["checkpoints"] is None else f"every {p['checkpoints']:g}s"
        peak = "-" if p["peak_wal_frames"] is None else str(p["peak_wal_frames"])
        print(
            f"{label:<12} {p['requests']:>8} {p['p50_ms']:>8.3f} {p['p99_ms']:>8.3f} {p['p999_ms']:>8.3f} "
            f"{p['max_ms']:>8.1f} {peak:>8}"
        )
    print(f"CPU pressure (some avg10) before/after: {pressure}")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    out = results / f"wal_checkpoint-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"args": vars(args), "frames_per_request": per_request, "phases": phases}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
