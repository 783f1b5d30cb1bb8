"""The life of one request's credit hold: admit, open, record progress, settle exactly once.

Every accepted request holds its maximum cost before any compute is spent and settles what the engine
really used after, on every way out: success, an engine error before any output (billed nothing), a
client that leaves (billed what was generated), a cancellation, any exception. `Holding` is that life as
one async context manager, so each endpoint reads `async with holds.open(...) as held:` and cannot forget
a path:

    async with gateway.holds.open(principal, deployment, "chat.completions", est, headers, gone) as held:
        ...  # call the engine, fold its usage into held.usage
    # settled here (or earlier, by `await held.settle("ok")`, for a stream's final usage chunk)

This is the only module of the gateway that calls `BillingService` (reserve, record_progress, settle,
written): a change of the money path's names is a change here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType

from yun.billing import BillingService, Estimate, Hold, Outcome
from yun.cluster import ClientGone, Pool
from yun.errors import ClientDisconnected, RateLimited
from yun.gateway.ratelimit import Limits, RateLimitBackendError, RateLimitStore
from yun.gateway.usage import Usage
from yun.tenancy import Principal

__all__ = ["Holding", "Holds", "UsageSink", "request_id"]

log = logging.getLogger("yun.gateway")

UsageSink = Callable[[Usage], None]
"""Receives one `Usage` per finished request (after it is settled)."""

_PREFIXES = {
    "chat.completions": "chatcmpl-",
    "completions": "cmpl-",
    "embeddings": "embd-",
    "responses": "resp_",
    "messages": "msg_",
}


def request_id(prefix: str) -> str:
    """`prefix` + 32 hex digits: milliseconds since the epoch (48 bits), then 80 random bits (as UUIDv7).

    Time-ordered, so the usage, reservation and ledger indexes keyed by it grow at their right edge: a
    random id (uuid4) put every insert on a different index page, and each such page is one more page in
    the commit's WAL write and in the next checkpoint. Not a secret: unique is all it must be.
    """
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def failed(exc: BaseException) -> str:
    """The usage status of a request that ended with `exc`: a client that left (cancellation, closed
    generator, disconnected while queued) is `aborted` and billed what the engine generated; anything
    else is an `error`, billed what the engine generated before failing (nothing, if nothing)."""
    return "aborted" if not isinstance(exc, Exception) or isinstance(exc, ClientDisconnected) else "error"


def _log_failure(job: asyncio.Future[None]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.error("background bookkeeping failed (open holds are settled by recovery)", exc_info=job.exception())


def _log_failed_progress(written: Future[bool]) -> None:
    if written.exception() is not None:
        log.warning("recording stream progress failed (a crash bills the record before)", exc_info=written.exception())


def _scopes(principal: Principal) -> list[tuple[str, Limits]]:
    scopes = []
    if principal.rpm_limit is not None or principal.tpm_limit is not None:
        scopes.append((f"key:{principal.key_id}", Limits(principal.rpm_limit, principal.tpm_limit)))
    if principal.org_rpm_limit is not None or principal.org_tpm_limit is not None:
        scopes.append((f"org:{principal.org_id}", Limits(principal.org_rpm_limit, principal.org_tpm_limit)))
    return scopes


class Holds:
    """Opens holds (`open`) for one gateway: its billing, its rate limits, its usage sinks."""

    def __init__(
        self,
        billing: BillingService,
        limiter: RateLimitStore,
        sinks: list[UsageSink],
        progress_interval_s: float = 1.0,
    ) -> None:
        self.billing = billing
        self.limiter = limiter
        self.sinks = sinks
        """Called with each request's usage once it is settled (metrics); the gateway's own list."""
        self.progress_interval_s = progress_interval_s
        """How often a running stream's tokens so far are written onto its hold (for crash recovery)."""
        self._background: set[asyncio.Task[None]] = set()

    def open(
        self,
        principal: Principal,
        deployment: Pool,
        endpoint: str,
        est: Estimate,
        headers: dict[str, str],
        client_gone: ClientGone | None = None,
    ) -> Holding:
        """The hold of one request, to enter with `async with`: entering admits it (rate limits, which
        fill `headers`) and holds its maximum cost (or raises RateLimited / QuotaExceeded)."""
        return Holding(self, principal, deployment, endpoint, est, headers, client_gone)

    async def admit(self, scopes: list[tuple[str, Limits]], tokens: int, headers: dict[str, str]) -> None:
        """Rate limits first (cheap, refuses floods before they touch the database), then credit."""
        try:
            decision = await self.limiter.acquire(scopes, tokens)
        except RateLimitBackendError:
            # Limits protect capacity, credit holds protect money: with the limit store down we keep
            # serving (holds still guard every balance) and say so loudly.
            log.warning("rate-limit store unavailable; admitting without limits", exc_info=True)
            return
        headers.update(decision.headers())
        if decision.allowed:
            return
        if decision.reason == "tokens_exceed_limit":
            message = (
                f"Request too large: it may use up to {tokens} tokens, more than the tokens-per-minute "
                "limit allows. Lower max_tokens or shorten the prompt."
            )
        else:
            which = "requests" if decision.reason == "rpm" else "tokens"
            message = (
                f"Rate limit reached for {which} per minute on this {(decision.scope or 'key').split(':')[0]}. "
                f"Please try again in {decision.retry_after_s:.1f}s."
            )
        raise RateLimited(message, retry_after_s=decision.retry_after_s, headers=decision.headers())

    def adjust_later(self, scopes: list[tuple[str, Limits]], delta: int) -> None:
        if not scopes or delta == 0:
            return
        task = asyncio.ensure_future(self.limiter.adjust(scopes, delta))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    def settled(self, usage: Usage, done: asyncio.Future[bool]) -> None:
        if done.exception() is not None:
            log.error("settling %s failed (recovery settles its hold)", usage.request_id, exc_info=done.exception())
        for sink in self.sinks:
            try:
                sink(usage)
            except Exception:  # noqa: BLE001 - one failing sink must not lose the others' record
                log.exception("usage sink failed for %s", usage.request_id)


class Holding:
    """One accepted request: its hold, its usage so far, and the promise to settle it exactly once.

    Entered (`async with`), it admits the request and opens the hold; left, it settles: with the usage
    status as it stands when the block ends normally, `aborted` when the client left (cancellation, a
    closed stream, a disconnect while queued), `error` on any other exception. A stream settles earlier
    (`await held.settle("ok")`) to put the cost in its final chunk; leaving the block then does nothing.
    """

    __slots__ = (
        "_holds",
        "_scopes",
        "client_gone",
        "deployment",
        "est",
        "estimated_tokens",
        "headers",
        "hold",
        "principal",
        "progress",
        "progress_at",
        "settled",
        "started",
        "usage",
    )

    hold: Hold
    """The hold as written (set on entering)."""

    def __init__(
        self,
        holds: Holds,
        principal: Principal,
        deployment: Pool,
        endpoint: str,
        est: Estimate,
        headers: dict[str, str],
        client_gone: ClientGone | None,
    ) -> None:
        self._holds = holds
        self.principal = principal
        self.deployment = deployment
        self.est = est
        self.headers = headers
        self.client_gone = client_gone
        """Returns once the client disconnected; a request still queued for a replica then leaves."""
        self.usage = Usage(request_id(_PREFIXES[endpoint]), endpoint, deployment.spec.model_id)
        self.estimated_tokens = est.prompt_tokens + est.max_output_tokens
        self._scopes: list[tuple[str, Limits]] = []
        self.settled = True  # nothing to settle until the hold is written
        self.started = 0.0
        self.progress_at = math.inf
        """When (`perf_counter`) the next progress record is due; set for streams only."""
        self.progress = (0, 0, 0)
        """(prompt, completion, cached) tokens last recorded on the hold."""

    async def __aenter__(self) -> Holding:
        holds, principal, usage = self._holds, self.principal, self.usage
        scopes = _scopes(principal)
        if scopes:
            await holds.admit(scopes, self.estimated_tokens, self.headers)
        try:
            self.hold = await holds.billing.reserve(
                usage.request_id, principal.org_id, principal.key_id, usage.model_id, usage.endpoint, self.est
            )
        except BaseException:
            holds.adjust_later(scopes, -self.estimated_tokens)  # refused before any compute: tokens back
            raise
        self._scopes = scopes
        self.settled = False
        self.started = time.perf_counter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.settled:
            await self.settle(None if exc is None else failed(exc))

    def start_progress(self) -> None:
        """Stream mode: the first progress record is due one interval in, so a stream that ends sooner
        (the common short request) writes only its hold and its settlement."""
        self.progress_at = self.started + self._holds.progress_interval_s

    def record_progress(self) -> None:
        """Write the tokens generated so far onto the hold, so that a crash of this process before the
        settlement still bills them (BillingService.recover). Fire and forget: the relay never waits for
        the write, and a failed one costs only this record (the next one or the settlement supersedes it)."""
        holds = self._holds
        self.progress_at = time.perf_counter() + holds.progress_interval_s
        usage = self.usage
        counts = usage.live_counts()
        if counts == self.progress or self.settled:
            return  # nothing new since the last record: a stalled engine costs no writes
        try:
            written = holds.billing.record_progress(self.hold, *counts)
        except Exception:  # noqa: BLE001 - a progress record must never break the stream it describes
            log.warning("recording progress of %s failed", usage.request_id, exc_info=True)
            return
        self.progress = counts
        written.add_done_callback(_log_failed_progress)

    async def settle(self, status: str | None = None) -> None:
        """Settle once. Usage is the engine's own count; an error before any output bills nothing.

        The settlement is queued to the money writer before the first await, so no cancellation can
        stop it: when a client goes away, the server cancels this coroutine (repeatedly, with anyio),
        but the hold still gets settled and the usage sinks (metrics) still see the request.
        """
        done = self.submit_settlement(status)
        if done is not None:
            await asyncio.shield(done)  # if this coroutine is cancelled, the write still completes

    def submit_settlement(self, status: str | None = None) -> asyncio.Future[bool] | None:
        """`settle`'s first half, without waiting: the settlement is queued to the money writer and the
        usage's cost set before this returns; the future completes once it is committed (None if it was
        settled already). A write queued right after it (a stored response) joins its transaction."""
        if self.settled:
            return None
        self.settled = True
        holds, usage = self._holds, self.usage
        if status is not None:
            usage.status = status
        usage.close_live()  # an unfinished engine call (aborted stream) counts what it generated
        usage.latency_s = time.perf_counter() - self.started
        used = usage.prompt_tokens + usage.completion_tokens
        holds.adjust_later(self._scopes, used - self.estimated_tokens)  # TPM counts what was really used
        cost, written = holds.billing.settle(
            self.hold,
            Outcome(
                replica=usage.replica,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                status=usage.status,
                latency_s=usage.latency_s,
                ttft_s=usage.ttft_s,
            ),
        )
        usage.cost = cost
        done = holds.billing.written(written)
        done.add_done_callback(lambda d: holds.settled(usage, d))
        return done
