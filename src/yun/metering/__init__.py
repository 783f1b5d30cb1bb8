"""Usage records, the ledger and rollups: reading what the request path settled."""

from yun.metering.usage import MAX_PAGE, UsageQueries, UsageSummaryRow, format_usd

__all__ = ["MAX_PAGE", "UsageQueries", "UsageSummaryRow", "format_usd"]
