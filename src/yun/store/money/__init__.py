"""The money tables: prices, credits, holds, settlements and usage.

- `records`: what the layers pass each other (a hold's request and record, progress, a settlement, prices);
- `sql`: the request path's writes as plain SQL statements (hold, settle, record progress) on a cursor;
- `writer`: the group-committing `MoneyWriter` that runs them (one per database and process);
- `repository`: `MoneyRepository`, every other read and write (admin credits, prices, reports, open holds).

One name per operation through every layer: `reserve` (take a hold), `record_progress`, `settle`,
`credit` (an admin posting to the ledger).
"""

from yun.store.money.records import (
    BACKGROUND_ENDPOINTS,
    COMPUTE_ENDPOINT,
    INT64_MAX,
    MAX_FREE_TOKENS,
    MAX_PRICE_PER_MTOK,
    POSTING_KINDS,
    ROLLUP_SUMS,
    TRAINING_ENDPOINT,
    ComputeBill,
    HoldRecord,
    HoldRequest,
    PeriodFigures,
    PriceRecord,
    ProgressRecord,
    ResponseWrite,
    SettleRecord,
    StaleComputeBill,
    compute_holder,
    quota_message,
    training_holder,
)
from yun.store.money.repository import MoneyRepository
from yun.store.money.writer import MoneyWriter, money_writer

__all__ = [
    "BACKGROUND_ENDPOINTS",
    "COMPUTE_ENDPOINT",
    "INT64_MAX",
    "MAX_FREE_TOKENS",
    "MAX_PRICE_PER_MTOK",
    "POSTING_KINDS",
    "ROLLUP_SUMS",
    "ComputeBill",
    "HoldRecord",
    "HoldRequest",
    "MoneyRepository",
    "MoneyWriter",
    "PeriodFigures",
    "PriceRecord",
    "ProgressRecord",
    "ResponseWrite",
    "SettleRecord",
    "StaleComputeBill",
    "TRAINING_ENDPOINT",
    "compute_holder",
    "money_writer",
    "quota_message",
    "training_holder",
]
