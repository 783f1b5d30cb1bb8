"""Failed console sign-ins per client IP, so that one address cannot guess passwords at length, nor lock
other people out.

Two rules, held in memory by each gateway process (a restart forgets them; behind N gateways an address
gets up to N times the allowance, which still bounds guessing):
- an address with `max_failures` failed sign-ins in the last `window_s` seconds is refused (429, with
  Retry-After) until the oldest of them leaves the window, whatever account it names, before any password
  is checked;
- an account's own lockout (`console.max_failed_logins` in a row) counts at most one failure per address
  per window, so it is set off only by failures from that many different addresses (a spread-out guess),
  never by one address alone, which the first rule already stops.

Behind a load balancer every client has the balancer's address unless the balancer is listed in
`server.trusted_proxies`: Yun then takes the client's address from its X-Forwarded-For.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["SignInThrottle"]

_MAX_TRACKED = 100_000
"""Addresses tracked at most; past that the oldest are forgotten (a bound on memory under a flood)."""


class SignInThrottle:
    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._pairs: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def retry_after(self, ip: str) -> float:
        """Seconds until this address may try again (0: now)."""
        now = self._clock()
        with self._lock:
            times = self._recent(ip, now)
            if times is None or len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[-self.max_failures] + self.window_s - now)

    def failed(self, ip: str, account: str | None) -> bool:
        """Count a failed sign-in from `ip` naming `account`; True when the account's lockout should count
        it (the first failure on that account from this address in the window)."""
        now = self._clock()
        with self._lock:
            times = self._recent(ip, now)
            if times is None:
                if len(self._failures) >= _MAX_TRACKED:
                    self._forget(now)
                times = self._failures.setdefault(ip, deque())
            times.append(now)
            if account is None:
                return False
            seen = self._pairs.get((ip, account))
            if seen is not None and seen + self.window_s > now:
                return False
            if len(self._pairs) >= _MAX_TRACKED:
                self._forget(now)
            self._pairs[(ip, account)] = now
            return True

    def _recent(self, ip: str, now: float) -> deque[float] | None:
        times = self._failures.get(ip)
        if times is None:
            return None
        while times and times[0] + self.window_s <= now:
            times.popleft()
        return times

    def _forget(self, now: float) -> None:
        for ip in [ip for ip, t in self._failures.items() if not t or t[-1] + self.window_s <= now]:
            del self._failures[ip]
        for pair in [p for p, t in self._pairs.items() if t + self.window_s <= now]:
            del self._pairs[pair]
        while len(self._failures) >= _MAX_TRACKED:
            del self._failures[next(iter(self._failures))]
        while len(self._pairs) >= _MAX_TRACKED:
            del self._pairs[next(iter(self._pairs))]
