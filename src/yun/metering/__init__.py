"""Usage records, the ledger and rollups: reading what the request path settled."""
