"""Money invariants (ARCHITECTURE.md) under stress, against real `yun serve` processes on 127.0.0.1.

1. A flood of concurrent requests from many keys of one organization never overdraws it, and every
   accepted request is billed exactly once.
2. SIGKILL of the whole server (gateway + replicas) during streaming load, ten times over one data dir:
   what a client saw finish is billed exactly as it saw it; what the kill cut off is settled by crash
   recovery at the next start, at the progress the gateway last recorded on its hold (so a stream cut
   after a second of output is billed for some of it); the ledger stays exact.
3. A client that disconnects mid-stream is billed what the engine generated, by the engine's own count.

No assertion depends on wall-clock speed: the machine is small and shared, so every wait is a bounded
poll on a condition and every figure is a count.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import (
    MODEL,
    NANO,
    PROGRESS_INTERVAL_S,
    ReliabilityServer,
    audit_ledger,
    expected_cost,
    usd,
)
from tests.support.net import free_port

pytestmark = pytest.mark.reliability

MESSAGES = [{"role": "user", "content": "Say something."}]


def _chat(max_tokens: int, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _limits(connections: int) -> httpx.Limits:
    # uvicorn closes a keep-alive connection after 5 s idle, exactly httpx's default expiry: a request sent
    # on such a connection as the server closes it fails in the client before Yun sees it. That race is
    # the test client's, not Yun's, so the load clients drop idle connections well before the server does.
    return httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=1.0)


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text


# ------------------------------------------------------------------------------------------------
# 1. Concurrency vs balance
# ------------------------------------------------------------------------------------------------
FLOOD_REQUESTS = 1000
FLOOD_KEYS = 20
FLOOD_IN_FLIGHT = 100
FLOOD_MAX_TOKENS = 4
AFFORDABLE = 100  # the organization's credit pays for this many requests at their real cost


@dataclass
class Reply:
    key: int
    status: int
    """HTTP status, or -1 when the request failed at the transport level."""
    body: Any


async def _flood(url: str, keys: list[str]) -> list[Reply]:
    todo = iter(range(FLOOD_REQUESTS))  # shared by the workers: at most FLOOD_IN_FLIGHT requests in flight
    replies: list[Reply] = []
    limits = _limits(FLOOD_IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300, trust_env=False) as client:

        async def worker() -> None:
            for i in todo:
                key = i % len(keys)
                try:
                    r = await client.post(
                        "/v1/chat/completions", json=_chat(FLOOD_MAX_TOKENS), headers=_auth(keys[key])
                    )
                except httpx.HTTPError as exc:
                    replies.append(Reply(key, -1, repr(exc)))
                else:
                    replies.append(Reply(key, r.status_code, _json(r)))

        await asyncio.gather(*(worker() for _ in range(FLOOD_IN_FLIGHT)))
    return replies


def test_concurrent_flood_never_overdraws_and_bills_each_accepted_request_once(yun_server: ReliabilityServer) -> None:
    server = yun_server
    # The real cost of one request, measured in a separate organization.
    probe_key = server.new_key(server.new_org("probe", "10"))
    r = httpx.post(
        server.url + "/v1/chat/completions", json=_chat(FLOOD_MAX_TOKENS), headers=_auth(probe_key), trust_env=False
    )
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    cost = expected_cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert round(usage["cost"] * NANO) == cost
    grant = AFFORDABLE * cost

    org = server.new_org("stress", usd(grant))
    keys = [server.new_key(org, f"key-{i}") for i in range(FLOOD_KEYS)]
    replies = asyncio.run(_flood(server.url, keys))

    assert len(replies) == FLOOD_REQUESTS
    statuses = dict(sorted(Counter(x.status for x in replies).items()))
    ok = [x for x in replies if x.status == 200]
    refused = [x for x in replies if x.status == 429]
    failed = [x for x in replies if x.status >= 500]  # must be none: asserted last, after the money checks
    odd = [x for x in replies if x.status not in (200, 429) and x.status < 500]  # -1: the connection failed
    assert odd == [], f"unexpected outcomes {statuses}; first: {odd[:3]}"
    for x in refused:
        assert x.body["error"]["code"] == "insufficient_quota" and x.body["error"]["type"] == "insufficient_quota", x
    for x in ok:
        assert x.body["usage"]["completion_tokens"] == FLOOD_MAX_TOKENS
        assert x.body["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    ok_ids = {x.body["id"] for x in ok}
    assert len(ok_ids) == len(ok), "a request id was returned twice"
    assert 0 < len(ok) <= AFFORDABLE and refused, statuses
    client_billed = sum(round(x.body["usage"]["cost"] * NANO) for x in ok)

    # The organization's own view, while the server still runs (and is idle).
    balance = server.org_get(keys[0], "balance")
    assert balance["held_nanodollars"] == 0
    assert balance["balance_nanodollars"] == grant - client_billed >= 0
    records = server.org_get(keys[0], "usage/records?limit=1000")["data"]
    assert {rec["request_id"] for rec in records if rec["status"] == "ok"} == ok_ids
    assert sum(1 for rec in records if rec["status"] == "ok") == len(ok)

    # The database itself, after a clean stop: exact ledger math.
    server.stop()
    audit = audit_ledger(server.db_path)
    mine = audit.of_org(org)
    assert {rid for rid, rec in mine.items() if rec["status"] == "ok"} == ok_ids
    others = [rec for rec in mine.values() if rec["status"] != "ok"]
    # A request that failed after its hold (a 5xx, see below) is settled as an error at zero cost.
    assert all(rec["status"] == "error" and rec["cost"] == 0 for rec in others), others[:3]
    assert len(others) <= len(failed)
    assert {rid for rid, h in audit.reservations.items() if h["org_id"] == org} == mine.keys(), (
        "a request refused for credit must leave no reservation"
    )
    settled = sum(rec["cost"] for rec in mine.values())
    assert settled == client_billed
    assert audit.credits[org] == grant
    assert audit.balances[org] == (grant - settled, 0)
    hold = audit.reservations[next(iter(ok_ids))]["amount"]
    print(
        f"\nflood: {statuses} of {FLOOD_REQUESTS} (-1 = transport error); cost/request {cost} n$, "
        f"hold/request {hold} n$, grant {grant} n$, final balance {grant - settled} n$"
    )
    assert failed == [], (
        f"{len(failed)} request(s) failed with a server error ({statuses}); first: {failed[:2]}. "
        "'no healthy replica' here means the replica was marked unhealthy under load while it was serving."
    )


# ------------------------------------------------------------------------------------------------
# 2. SIGKILL during streaming load, ten times over one data dir
# ------------------------------------------------------------------------------------------------
KILL_ROUNDS = 10
STREAMS = 8
LONG_MAX_TOKENS = 450
"""Long enough (the context per slot is 512) that a long stream outlives BILLED_AFTER_S on a fast machine."""
SHORT_MAX_TOKENS = (8, 32)
REQUESTS_PER_STREAM = 40  # bound on each worker's loop; the kill always comes first
BILLED_AFTER_S = 1.0
"""A stream the client saw output of for this long before the kill has a progress record (one is due
every PROGRESS_INTERVAL_S of stream time, which is shorter), so recovery bills it something."""
assert PROGRESS_INTERVAL_S < BILLED_AFTER_S


@dataclass
class StreamResult:
    round: int
    max_tokens: int
    status: int | None = None
    request_id: str | None = None
    content_chunks: int = 0
    usage: dict[str, Any] | None = None
    """The final usage chunk, if the client received it."""
    error: str | None = None
    content_at: list[float] = field(default_factory=list)
    """When (client's monotonic clock) each content chunk arrived."""
    killed_at: float | None = None
    """When the test started killing the server, for streams of a round that ended with a kill."""

    def streamed_s(self) -> float:
        """How long the client saw content arrive before the kill started. Chunks read after that were
        sent earlier and read late (the client's loop was blocked by the kill), so they do not count."""
        cutoff = self.killed_at if self.killed_at is not None else float("inf")
        before = [t for t in self.content_at if t < cutoff]
        return before[-1] - before[0] if before else 0.0


async def _stream_once(
    client: httpx.AsyncClient, key: str, result: StreamResult, streaming: asyncio.Event, completed: asyncio.Event
) -> StreamResult:
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", json=_chat(result.max_tokens, stream=True), headers=_auth(key)
        ) as r:
            result.status = r.status_code
            if r.status_code != 200:
                result.error = (await r.aread()).decode(errors="replace")
                return result
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                try:
                    event = json.loads(line[5:])
                except ValueError:  # a line cut in half by the kill
                    result.error = f"partial event {line[:80]!r}"
                    break
                if "error" in event:
                    result.error = json.dumps(event)
                    continue
                result.request_id = result.request_id or event.get("id")
                streaming.set()
                if event.get("usage"):
                    result.usage = event["usage"]
                    completed.set()
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        result.content_chunks += 1
                        result.content_at.append(time.monotonic())
    except httpx.TransportError as exc:
        result.error = repr(exc)
    return result


async def _stream_load_then_kill(
    server: ReliabilityServer, key: str, round_: int, rng: random.Random
) -> list[StreamResult]:
    results: list[StreamResult] = []
    streaming, completed, killed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    limits = _limits(STREAMS)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120, trust_env=False) as client:
        live: set[int] = set()
        results_by_id: dict[int, StreamResult] = {}

        async def worker(max_tokens: Callable[[], int]) -> None:
            for _ in range(REQUESTS_PER_STREAM):
                if killed.is_set():
                    return
                res = StreamResult(round_, max_tokens())
                results_by_id[id(res)] = res
                live.add(id(res))
                try:
                    await _stream_once(client, key, res, streaming, completed)
                finally:
                    live.discard(id(res))
                results.append(res)
                if res.status != 200 or res.error is not None:
                    return

        async def a_long_stream_is_billable() -> None:
            """Until some long stream in flight has shown output for longer than BILLED_AFTER_S, so every
            round cuts one that recovery must bill from a progress record, however fast the machine is."""
            while not any(
                (r := results_by_id[i]).max_tokens == LONG_MAX_TOKENS
                and r.content_at
                and time.monotonic() - r.content_at[0] >= BILLED_AFTER_S + 0.2
                for i in live
            ):
                await asyncio.sleep(0.02)

        # Short streams first; once they stream, long ones, which take the engine's 4 slots as the short
        # ones finish and are cut by the kill. The kill waits for a first stream to complete and for a
        # long one to have streamed past BILLED_AFTER_S, then a random moment, so every round has streams
        # seen to their final usage chunk and one cut late, however slow or fast the machine is.
        short = [asyncio.create_task(worker(lambda: rng.choice(SHORT_MAX_TOKENS))) for _ in range(STREAMS // 2)]
        await asyncio.wait_for(streaming.wait(), 120)
        long = [asyncio.create_task(worker(lambda: LONG_MAX_TOKENS)) for _ in range(STREAMS - len(short))]
        await asyncio.wait_for(completed.wait(), 120)
        await asyncio.wait_for(a_long_stream_is_billable(), 120)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        killed.set()
        killed_at = time.monotonic()
        server.kill9()
        await asyncio.wait_for(asyncio.gather(*short, *long), 120)
    for res in results:
        res.killed_at = killed_at
    return results


def _recovered(server: ReliabilityServer) -> int:
    """How many open reservations the last start's crash recovery settled (from its log)."""
    found = re.findall(r"settled (\d+) reservation\(s\) left open", server.stderr_tail(chars=1_000_000))
    return int(found[-1]) if found else 0


def _check_clients_against_ledger(results: list[StreamResult], records: dict[str, dict[str, Any]]) -> None:
    seen: set[str] = set()
    for res in results:
        # 200; no answer at all (the kill came first); or 502/503 when the engine, killed a moment
        # before the gateway, went away before its first byte. Never refused for credit.
        assert res.status in (200, None, 502, 503), res
        if res.status in (502, 503):
            assert res.request_id is None and res.usage is None, res
            continue
        if res.request_id is None:
            # Never got a byte (connection refused or cut before the first chunk); its reservation, if
            # any, is still checked by the audit (settled once, interrupted at zero cost).
            assert res.usage is None and res.error is not None, res
            continue
        assert res.request_id not in seen, f"request id {res.request_id} reused"
        seen.add(res.request_id)
        rec = records.get(res.request_id)
        assert rec is not None, f"accepted request {res.request_id} has no usage record: {res}"
        if res.usage is not None:
            # The client saw the end: billed exactly what it was told, as status ok.
            assert rec["status"] == "ok", (res, rec)
            assert rec["completion_tokens"] == res.usage["completion_tokens"] == res.max_tokens, (res, rec)
            assert rec["prompt_tokens"] == res.usage["prompt_tokens"], (res, rec)
            assert rec["cost"] == round(res.usage["cost"] * NANO), (res, rec)
        else:
            # Cut off by the kill: settled by recovery at the progress last recorded on its hold, unless
            # it was settled (ok, complete) just before the kill and only the final chunk was lost.
            assert res.error is not None, res
            assert rec["status"] in ("interrupted", "ok"), (res, rec)
            if rec["status"] == "ok":
                assert rec["completion_tokens"] == res.max_tokens >= res.content_chunks, (res, rec)
            else:
                # Never more than the engine could generate under the hold's max_tokens; something, once
                # the client had seen output for longer than a progress interval.
                assert 0 <= rec["completion_tokens"] <= res.max_tokens, (res, rec)
                if res.streamed_s() >= BILLED_AFTER_S:
                    assert rec["completion_tokens"] > 0 and rec["prompt_tokens"] > 0, (res, res.streamed_s(), rec)


def test_sigkill_during_streaming_loses_nothing_and_bills_nothing_twice(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    server = ReliabilityServer(tmp_path, port=free_port())
    all_results: list[StreamResult] = []
    rounds: list[str] = []
    try:
        server.start()
        server.set_price()
        org = server.new_org("crash", "1000")
        key = server.new_key(org)
        interrupted_before = long_enough = 0
        for round_ in range(1, KILL_ROUNDS + 1):
            results = asyncio.run(_stream_load_then_kill(server, key, round_, rng))
            all_results += results
            server.start()  # same data dir and port: recovery of the dead server's holds runs before it serves

            audit = audit_ledger(server.db_path)  # every invariant, cumulative over all rounds so far
            records = audit.of_org(org)
            _check_clients_against_ledger(all_results, records)
            statuses = [r["status"] for r in records.values()]
            # "error": the engine, killed a moment before the gateway, dropped a stream before its first
            # token; the gateway settled it itself at zero cost.
            assert set(statuses) <= {"ok", "interrupted", "error"}, sorted(set(statuses))
            assert all(r["cost"] == 0 for r in records.values() if r["status"] == "error")
            interrupted = statuses.count("interrupted")
            assert _recovered(server) == interrupted - interrupted_before
            balance = server.org_get(key, "balance")
            assert (balance["balance_nanodollars"], balance["held_nanodollars"]) == audit.balances[org]

            completed = sum(1 for x in results if x.usage is not None)
            cut = [x for x in results if x.usage is None and x.request_id is not None]
            cut_recovered = [x for x in cut if records[x.request_id or ""]["status"] == "interrupted"]
            recovered = [records[x.request_id or ""] for x in cut_recovered]
            long_enough += sum(1 for x in cut_recovered if x.streamed_s() >= BILLED_AFTER_S)
            rounds.append(
                f"round {round_}: {len(results)} streams, {completed} completed (usage chunk seen), "
                f"{len(cut)} cut mid-stream, {sum(1 for x in results if x.request_id is None)} cut before "
                f"any byte; recovery settled {interrupted - interrupted_before} as interrupted, "
                f"billing {sum(rec['completion_tokens'] for rec in recovered)} completion tokens for "
                f"{sum(x.content_chunks for x in cut_recovered)} content chunks delivered; "
                f"{long_enough} cut streams so far had shown output for {BILLED_AFTER_S} s or more"
            )
            interrupted_before = interrupted

        # The rounds exercised both paths: streams seen to the end, and streams cut mid-way.
        assert any(x.usage is not None for x in all_results), "no stream ever completed"
        assert any(x.usage is None and x.request_id is not None for x in all_results), "no stream cut mid-way"
        assert interrupted_before > 0, "crash recovery never had anything to settle"
        # ... and some stream was cut after showing output for BILLED_AFTER_S, so the check that
        # recovery billed it something was not vacuous.
        assert long_enough > 0, "no stream was cut late enough to need a progress record"
    finally:
        server.stop()
        print(f"\nsigkill rounds (seed {seed}):\n" + "\n".join(rounds))
    final = audit_ledger(server.db_path)
    _check_clients_against_ledger(all_results, final.of_org(org))


# ------------------------------------------------------------------------------------------------
# 3. Client disconnects mid-stream
# ------------------------------------------------------------------------------------------------
DISCONNECT_MAX_TOKENS = 2000
DISCONNECT_AFTER_CHUNKS = 10
DISCONNECT_ROUNDS = 3


def _engine_counters(engine: tuple[str, dict[str, str]]) -> tuple[float, float]:
    """(tokens predicted in total, requests processing now) from llama.cpp's own /metrics."""
    url, headers = engine
    text = httpx.get(url + "/metrics", headers=headers, trust_env=False, timeout=10).text

    def value(name: str) -> float:
        m = re.search(rf"^llamacpp:{name} (\S+)$", text, re.M)
        assert m is not None, f"llama.cpp /metrics has no {name}"
        return float(m.group(1))

    return value("tokens_predicted_total"), value("requests_processing")


def _engine_settled_count(engine: tuple[str, dict[str, str]]) -> float:
    """The engine's generated-token counter once it has stopped working (bounded poll)."""
    last = None
    for _ in range(300):
        predicted, processing = _engine_counters(engine)
        if processing == 0 and predicted == last:
            return predicted
        last = predicted
        time.sleep(0.1)
    raise AssertionError("the engine never became idle")


def _usage_record(server: ReliabilityServer, key: str, request_id: str) -> dict[str, Any]:
    for _ in range(300):
        for rec in server.org_get(key, "usage/records?limit=1000")["data"]:
            if rec["request_id"] == request_id:
                return dict(rec)
        time.sleep(0.1)
    raise AssertionError(f"no usage record for {request_id}")


def test_client_disconnect_bills_what_the_engine_generated(yun_server: ReliabilityServer) -> None:
    server = yun_server
    org = server.new_org("disconnect", "10")
    key = server.new_key(org)
    engine = server.engine()
    report = []
    for _ in range(DISCONNECT_ROUNDS):
        before = _engine_settled_count(engine)
        request_id, received = None, 0
        with (
            httpx.Client(base_url=server.url, trust_env=False, timeout=120) as client,
            client.stream(
                "POST", "/v1/chat/completions", json=_chat(DISCONNECT_MAX_TOKENS, stream=True), headers=_auth(key)
            ) as r,
        ):
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                event = json.loads(line[5:])
                request_id = request_id or event.get("id")
                assert "usage" not in event, "the stream ended before the client left"
                received += sum(1 for c in event.get("choices") or [] if (c.get("delta") or {}).get("content"))
                if received >= DISCONNECT_AFTER_CHUNKS:
                    break
        # Leaving both blocks mid-stream closed the TCP connection: the client is gone.
        assert request_id is not None and received == DISCONNECT_AFTER_CHUNKS
        rec = _usage_record(server, key, request_id)
        generated = _engine_settled_count(engine) - before

        assert rec["status"] == "aborted", rec
        assert DISCONNECT_AFTER_CHUNKS <= received <= rec["completion_tokens"] < DISCONNECT_MAX_TOKENS, rec
        assert rec["cost_nanodollars"] == expected_cost(rec["prompt_tokens"], rec["completion_tokens"])
        # Billed tokens are the engine's own running count as the gateway last read it: never more than the
        # engine generated. llama.cpp notices the closed connection only at its next write, so it may
        # generate a token or two more that nobody bills; the printed figures show how many.
        assert rec["completion_tokens"] <= generated, (rec, generated)
        report.append(f"client got {received}, billed {rec['completion_tokens']}, engine generated {int(generated)}")

    balance = server.org_get(key, "balance")
    assert balance["held_nanodollars"] == 0
    server.stop()
    audit = audit_ledger(server.db_path)
    assert {r["status"] for r in audit.of_org(org).values()} == {"aborted"}
    assert audit.balances[org][0] == balance["balance_nanodollars"]
    print("\ndisconnects: " + "; ".join(report))
