"""How one streamed chat request travels through the gateway's modules: functions entered, per module.

Run (a second, no servers):
    .venv/bin/python bench/gateway_entries.py [--batches 6]
    OTHER/.venv/bin/python bench/gateway_entries.py      # the same count for another checkout's code

The program imports `yun` from the interpreter's environment, so a baseline checkout's `.venv` measures
that checkout. In one process: a temporary SQLite database with one organization, credits and a price;
a principal with RPM/TPM limits; a fake llama.cpp engine streaming `--batches` one-token batches (running
counts in `timings`, usage at the end). One request warms up, then one runs under `sys.setprofile`:
every `call` event (a function entered, or a coroutine/generator resumed) of code in `yun/gateway/` is
counted by module and function, and separately when the caller is outside `yun/gateway/` (the entries
into the gateway from the router, the SSE writer, the money writer's callbacks). Not a timing: counts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

from yun.billing import BillingService
from yun.cluster import Endpoint, Pool, ReplicaSpec
from yun.gateway import Gateway, Metrics
from yun.gateway.ratelimit import MemoryRateLimitStore
from yun.store import Database, OrganizationRepository, upgrade
from yun.store.money import MoneyRepository, money_writer
from yun.tenancy import Principal

GATEWAY_DIR = "/yun/gateway/"


class FakeLlama:
    name = "fake/0"
    speaks_llamacpp = True

    def __init__(self, batches: int) -> None:
        self.batches = batches

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        for i in range(1, self.batches + 1):
            await asyncio.sleep(0)
            delta = {"content": "x"}
            timings = {"prompt_n": 20, "cache_n": 0, "predicted_n": i}
            yield [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}], "timings": timings}]
        yield [
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": self.batches}},
        ]


class OneModel:
    def __init__(self, deployment: Pool) -> None:
        self.deployment = deployment

    def get(self, model_id: str, org_id: str | None = None) -> Pool:
        return self.deployment


async def measure(batches: int, tmp: Path) -> None:
    url = f"sqlite:///{tmp / 'yun.db'}"
    upgrade(url)
    db = Database(url)
    OrganizationRepository(db).get_or_create("org-a", "a")
    money = MoneyRepository(db)
    money.add_price("fake", 1_000_000, 4_000_000, 1_000_000)
    money.credit("org-a", "grant", 10**12, "g1")
    money_writer(db).bind_loop(asyncio.get_running_loop())
    spec = ReplicaSpec("fake", "chat", url="http://fake.invalid", context_length=4096)
    replica = Endpoint(f"{spec.model_id}/0", FakeLlama(batches), 4)  # type: ignore[arg-type]
    cluster: Any = OneModel(Pool(spec, [replica]))
    gateway = Gateway(cluster, Metrics(), BillingService(db, "gw-1"), MemoryRateLimitStore())
    principal = Principal(key_id="k", org_id="org-a", is_platform_admin=False, rpm_limit=10**6, tpm_limit=10**9)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": batches}

    async def one() -> None:
        chunks = await gateway.chat_stream(principal, "fake", body, True, {})
        async for _ in chunks:
            pass

    per_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    from_outside: collections.Counter[str] = collections.Counter()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or GATEWAY_DIR not in frame.f_code.co_filename:
            return
        module = frame.f_code.co_filename.split(GATEWAY_DIR)[1]
        per_module[module][frame.f_code.co_name] += 1
        caller = frame.f_back
        if caller is None or GATEWAY_DIR not in caller.f_code.co_filename:
            from_outside[f"{module}:{frame.f_code.co_name}"] += 1

    await one()  # warm up: imports, caches, the tokenizer-less count
    sys.setprofile(profile)
    try:
        await one()
        for _ in range(100):  # the settlement's callbacks (usage sinks) run once the write commits
            if per_module["service.py"]["_observe"]:
                break
            await asyncio.sleep(0.01)
    finally:
        sys.setprofile(None)
    money_writer(db).bind_loop(None)
    db.dispose()

    print(f"one streamed chat, {batches} batches of output; entries = calls + coroutine/generator resumes")
    print(f"{'module':<22} {'functions':>9} {'entries':>8}  by function")
    for module, counts in sorted(per_module.items()):
        detail = ", ".join(f"{name} {n}" for name, n in counts.most_common())
        print(f"{module:<22} {len(counts):>9} {sum(counts.values()):>8}  {detail}")
    print("entered from outside yun/gateway/: " + ", ".join(f"{k} {n}" for k, n in from_outside.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="yun-entries-") as tmp:
        asyncio.run(measure(args.batches, Path(tmp)))


if __name__ == "__main__":
    main()
