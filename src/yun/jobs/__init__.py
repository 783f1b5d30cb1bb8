"""Work that is not one request: uploaded files (and, next, the fine-tuning and batch jobs that read them).

`jobs` sits between `api` and `gateway` (ARCHITECTURE.md): a batch runner will submit through the gateway.
"""
