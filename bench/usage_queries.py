"""Usage and spend queries for one org over 10 million usage records: rollups vs a raw scan.

Run (SQLite about 3-4 minutes; PostgreSQL adds about as much again):
    .venv/bin/python bench/usage_queries.py [--rows 10000000] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

Target: usage and spend queries for one org over 10 million usage rows answer in < 200 ms (rollups).

What it does, per backend (a fresh SQLite file in a temp dir; with --postgres also a temp database on that
server, dropped afterwards):
1. Schema by `upgrade(url)`, 50 orgs, one price per model (3 models, whole nanodollars per token).
2. `--rows` usage records generated inside the database (recursive CTE / generate_series, 1M per chunk),
   in time order over the last 90 UTC days with the orgs and models interleaved, as the gateway writes
   them; then one `charge` ledger entry per record and one grant per org before the first day (so
   statements reconcile and their ledger reads are as big as in production), balances, and the rollups
   by one INSERT ... SELECT ... GROUP BY. Secondary indexes are dropped for the load and rebuilt after.
   Loading stops after --load-budget seconds: the table then says how many rows were loaded.
3. For one org, median of --runs (after one warm-up): `UsageQueries.summary` by model and by day over 30
   and 90 days, and `monthly_statement` for the previous full month; the baseline, in the same run, is the
   same figures computed from usage_records with GROUP BY (no cost split by kind there: usage_records
   has only the total) and, for the statement, the same ledger query. The statement is timed once more
   after adding an index the schema does not have, ledger_entries (org_id, created_at, kind, amount).
Before timing, the rollup and raw answers are checked to agree on requests, tokens and cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, bindparam, create_engine, func, select, text

from yun.billing.statements import month_bounds, monthly_statement
from yun.metering import UsageQueries
from yun.store import Database, upgrade
from yun.store.money import MoneyRepository
from yun.store.orm import LedgerRow, UsageRow

ORGS = 50
MODELS = ("model-a", "model-b", "model-c")
# input, output, cached input per 1M tokens: whole nanodollars per token, so SQL can price exactly.
PRICES = ((150_000_000, 600_000_000, 75_000_000), (600_000_000, 2_400_000_000, 300_000_000), (3_000_000_000,) * 3)
DAYS = 90
CHUNK = 1_000_000
ORG = "org-07"
DROPPED_INDEXES = {
    "ix_usage_org_created": "usage_records (org_id, created_at)",
    "ix_ledger_entries_org_id": "ledger_entries (org_id)",
    "ix_ledger_entries_created_at": "ledger_entries (created_at)",
}
PROPOSED_LEDGER_INDEX = "ledger_entries (org_id, created_at, kind, amount)"
_U, _L = UsageRow.__table__, LedgerRow.__table__
_AT = bindparam("at", type_=DateTime(timezone=True))  # so SQLite gets SQLAlchemy's timestamp format


# -- data generation (in the database: Python would spend minutes building 10M tuples) --------------
def _record_sql(dialect: str) -> str:
    """INSERT of usage records n in [:lo, :hi). Token counts are fixed functions of n; cost is priced
    exactly like the gateway does (whole nanodollars per token, so no rounding)."""
    if dialect == "sqlite":
        seq = "WITH RECURSIVE seq(n) AS (SELECT :lo UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < :hi)"
        ident = "printf('%s-%02d', '{p}', n % 50)"
        req = "printf('req-%010d', n)"
        # SQLAlchemy's SQLite DateTime format: 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, no offset).
        ts = (
            "strftime('%Y-%m-%d %H:%M:%S', :start_s + (n * :step_us) / 1000000, 'unixepoch')"
            " || printf('.%06d', (n * :step_us) % 1000000)"
        )
        source = "seq"
    else:
        seq = ""
        ident = "'{p}-' || lpad((n % 50)::text, 2, '0')"
        req = "'req-' || lpad(n::text, 10, '0')"
        ts = "CAST(:start AS timestamptz) + (n * :step_us) * interval '1 microsecond'"
        source = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS g(n)"
    model = "CASE (n / 50) % 3 WHEN 0 THEN 'model-a' WHEN 1 THEN 'model-b' ELSE 'model-c' END"
    price = " ".join(f"WHEN '{m}' THEN {{}}" for m in MODELS)
    per_token = [f"CASE model_id {price.format(*(p[i] // 1_000_000 for p in PRICES))} END" for i in range(3)]
    return f"""
        {seq}
        INSERT INTO usage_records (request_id, org_id, key_id, model_id, endpoint, replica, prompt_tokens,
            completion_tokens, cached_tokens, free_tokens, status, latency_ms, ttft_ms, price_version, cost,
            created_at)
        SELECT request_id, org_id, key_id, model_id, 'chat.completions', 'replica-0', p, c, k, 0, 'ok',
            100 + n % 400, 20 + n % 50, 1,
            (p - k) * {per_token[0]} + c * {per_token[1]} + k * {per_token[2]}, created_at
        FROM (
            SELECT n, {req} AS request_id, {ident.format(p="org")} AS org_id, {ident.format(p="key")} AS key_id,
                {model} AS model_id, 50 + (n * 7919) % 2000 AS p, 10 + (n * 104729) % 800 AS c,
                CASE WHEN n % 4 = 0 THEN (50 + (n * 7919) % 2000) / 2 ELSE 0 END AS k, {ts} AS created_at
            FROM {source}
        ) AS r
    """


def _day(dialect: str, column: str = "created_at") -> str:
    if dialect == "sqlite":
        return f"substr({column}, 1, 10)"
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _rollup_sql(dialect: str) -> str:
    per_mtok = "/ 1000000"
    day = _day(dialect, "u.created_at")
    return f"""
        INSERT INTO usage_rollups (org_id, model_id, day, requests, prompt_tokens, completion_tokens,
            cached_tokens, free_tokens, input_cost, cached_input_cost, output_cost, cost)
        SELECT u.org_id, u.model_id, {day}, count(*), sum(prompt_tokens), sum(completion_tokens),
            sum(cached_tokens), sum(free_tokens),
            sum((prompt_tokens - cached_tokens) * (p.input_per_mtok {per_mtok})),
            sum(cached_tokens * (p.cached_input_per_mtok {per_mtok})),
            sum(completion_tokens * (p.output_per_mtok {per_mtok})), sum(cost)
        FROM usage_records AS u JOIN prices AS p ON p.model_id = u.model_id AND p.version = u.price_version
        GROUP BY u.org_id, u.model_id, {day}
    """


def load(db: Database, rows: int, start: datetime, budget_s: float) -> tuple[int, float]:
    """Fill the database; returns (usage records loaded, seconds)."""
    t0 = time.perf_counter()
    money = MoneyRepository(db)
    for model, (inp, out, cached) in zip(MODELS, PRICES, strict=True):
        money.add_price(model, inp, out, cached)
    dialect = db.engine.dialect.name
    step_us = DAYS * 86_400 * 1_000_000 // rows
    loaded = 0
    with db.engine.connect() as c:
        if dialect == "sqlite":
            # On the driver connection: SQLAlchemy would wrap them in BEGIN IMMEDIATE (store/db.py).
            for pragma in ("synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
                c.connection.driver_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]
        else:
            c.exec_driver_sql("SET synchronous_commit = off")
            c.exec_driver_sql("SET maintenance_work_mem = '1GB'")
            # Skip per-row foreign key triggers during the bulk load (superuser only; the orgs exist).
            c.exec_driver_sql("SET session_replication_role = replica")
        c.commit()
        c.execute(
            text("INSERT INTO organizations (id, name, created_at) VALUES (:id, :name, :at)").bindparams(_AT),
            [{"id": f"org-{i:02d}", "name": f"org {i}", "at": start} for i in range(ORGS)],
        )
        for name in DROPPED_INDEXES:
            c.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")  # 0004 dropped two already
        c.commit()
        sql = text(_record_sql(dialect))
        while loaded < rows and time.perf_counter() - t0 < budget_s:
            hi = min(rows, loaded + CHUNK)
            c.execute(
                sql, {"lo": loaded, "hi": hi, "start": start, "start_s": int(start.timestamp()), "step_us": step_us}
            )
            c.commit()
            loaded = hi
            print(f"  {loaded:>11,} usage records  {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
        grant_at = start - timedelta(days=1)
        c.execute(
            text(
                "INSERT INTO ledger_entries (org_id, kind, amount, reference, note, created_at) "
                "SELECT id, 'grant', 1000000000000000, 'bench-grant', NULL, :at FROM organizations"
            ).bindparams(_AT),
            {"at": grant_at},
        )
        c.exec_driver_sql(
            "INSERT INTO ledger_entries (org_id, kind, amount, reference, note, created_at) "
            "SELECT org_id, 'charge', -cost, request_id, model_id, created_at FROM usage_records WHERE cost > 0"
        )
        c.exec_driver_sql(
            "INSERT INTO balances (org_id, balance, held) "
            "SELECT org_id, sum(amount), 0 FROM ledger_entries GROUP BY org_id"
        )
        print(f"  ledger written  {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
        c.exec_driver_sql(_rollup_sql(dialect))
        c.commit()
        for name, on in DROPPED_INDEXES.items():
            c.exec_driver_sql(f"CREATE INDEX {name} ON {on}")
        c.commit()
    _analyze(db)
    print(f"  rollups, indexes, statistics  {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
    return loaded, time.perf_counter() - t0


def _analyze(db: Database) -> None:
    """Planner statistics; on PostgreSQL also the visibility map that autovacuum keeps on a live table
    (without it an index-only scan still visits the heap). VACUUM cannot run in a transaction."""
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
            c.commit()
    else:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM (ANALYZE)")


# -- the baseline: the same answers straight from usage_records -------------------------------------
def raw_summary(db: Database, org_id: str, first: date, end: date, group_by: str) -> list[dict[str, Any]]:
    key = _U.c.model_id if group_by == "model" else text(_day(db.engine.dialect.name))
    lo, hi = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (first, end))
    q = (
        select(
            key,
            func.count(),
            func.sum(_U.c.prompt_tokens),
            func.sum(_U.c.cached_tokens),
            func.sum(_U.c.completion_tokens),
            func.sum(_U.c.cost),
        )
        .where(_U.c.org_id == org_id, _U.c.created_at >= lo, _U.c.created_at < hi)
        .group_by(key)
        .order_by(key)
    )
    with db.engine.connect() as c:
        return [
            {
                "key": r[0],
                "requests": r[1],
                "prompt": int(r[2]),
                "cached": int(r[3]),
                "completion": int(r[4]),
                "cost": int(r[5]),
            }
            for r in c.execute(q)
        ]


def raw_statement(db: Database, org_id: str, year: int, month: int) -> tuple[list[dict[str, Any]], list[Any]]:
    start, end = month_bounds(year, month)
    usage = raw_summary(db, org_id, start.date(), end.date(), "model")
    with db.engine.connect() as c:  # the ledger reads of MoneyRepository.period_figures
        opening = c.execute(
            select(func.sum(_L.c.amount)).where(_L.c.org_id == org_id, _L.c.created_at < start)
        ).scalar()
        ledger = c.execute(
            select(_L.c.kind, func.sum(_L.c.amount))
            .where(_L.c.org_id == org_id, _L.c.created_at >= start, _L.c.created_at < end)
            .group_by(_L.c.kind)
        ).all()
    return usage, [opening, *ledger]


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: caches and connection pool
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def measure(url: str, rows: int, runs: int, budget_s: float) -> None:
    upgrade(url)
    db = Database(url)
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)  # raw_summary's end is exclusive; UsageQueries.summary's last day is not
    first_day = today - timedelta(days=DAYS)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    print(f"{db.engine.dialect.name}: loading {rows:,} usage records ...", file=sys.stderr)
    loaded, load_s = load(db, rows, start, budget_s)
    money = MoneyRepository(db)
    usage = UsageQueries(money)
    month_start, _ = month_bounds(today.year, today.month)
    last_month = (month_start - timedelta(days=1)).date()
    year, month = last_month.year, last_month.month

    def check(group_by: str, days: int) -> None:
        ours = usage.summary(ORG, today - timedelta(days=days), today, "model" if group_by == "model" else "day")
        raw = raw_summary(db, ORG, today - timedelta(days=days), tomorrow, group_by)
        got = [
            {"key": r.key, "requests": r.requests, "prompt": r.prompt_tokens, "cached": r.cached_tokens}
            | {"completion": r.completion_tokens, "cost": r.cost}
            for r in ours
        ]
        assert got == raw, f"rollups and raw scan disagree ({group_by}, {days} days)"

    table: list[tuple[str, float, float]] = []
    in_window = {}
    for days in (30, 90):
        for group_by in ("model", "day"):
            check(group_by, days)
            first = today - timedelta(days=days)
            in_window[days] = sum(r["requests"] for r in raw_summary(db, ORG, first, tomorrow, "model"))
            ours_ms = median_ms(lambda f=first, g=group_by: usage.summary(ORG, f, today, g), runs)
            raw_ms = median_ms(lambda f=first, g=group_by: raw_summary(db, ORG, f, tomorrow, g), runs)
            table.append((f"summary by {group_by}, {days} days", ours_ms, raw_ms))
    statement = monthly_statement(money, ORG, year, month)
    assert statement.reconciled and statement.line_items, "the benchmark statement must reconcile"
    ours_ms = median_ms(lambda: monthly_statement(money, ORG, year, month), runs)
    raw_ms = median_ms(lambda: raw_statement(db, ORG, year, month), runs)
    table.append((f"monthly_statement {year}-{month:02d}", ours_ms, raw_ms))
    # Not in the schema: the index a statement's ledger reads would need (a migration, if adopted).
    with db.engine.connect() as c:
        c.exec_driver_sql(f"CREATE INDEX ix_bench_ledger_org_created ON {PROPOSED_LEDGER_INDEX}")
        c.commit()
    _analyze(db)
    ours_ms = median_ms(lambda: monthly_statement(money, ORG, year, month), runs)
    raw_ms = median_ms(lambda: raw_statement(db, ORG, year, month), runs)
    table.append((f"monthly_statement {year}-{month:02d}, proposed ledger index", ours_ms, raw_ms))
    db.dispose()

    print(
        f"\n{db.engine.dialect.name}: {loaded:,} usage records + {loaded:,} ledger charges loaded in {load_s:.0f} s "
        f"({ORGS} orgs x {len(MODELS)} models x {DAYS} days); {ORG}: {in_window[30]:,} records in 30 days, "
        f"{in_window[90]:,} in 90; median of {runs} runs"
    )
    if loaded < rows:
        print(f"LOAD STOPPED AT THE {budget_s:.0f} s BUDGET: {loaded:,} of {rows:,} rows")
    width = max(len(name) for name, _, _ in table)
    print(f"{'query':<{width}} | rollups ms | raw-scan ms | ratio")
    print(f"{'-' * width}-|------------|-------------|-------")
    for name, ours_ms, raw_ms in table:
        print(f"{name:<{width}} | {ours_ms:>10.2f} | {raw_ms:>11.2f} | {raw_ms / ours_ms:>5.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--load-budget", type=float, default=300.0, help="seconds of usage-record generation at most")
    ap.add_argument("--postgres", metavar="URL", help="also run on a temp database created on this server")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="yun-bench-") as tmp:
        measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.rows, args.runs, args.load_budget)
    if args.postgres:
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"yun_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            measure(args.postgres.rsplit("/", 1)[0] + "/" + name, args.rows, args.runs, args.load_budget)
        finally:
            _drop(admin, name)


def _drop(admin: Engine, name: str) -> None:
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


if __name__ == "__main__":
    main()
