"""Upstream addresses without their secrets.

An external model's URL may carry credentials (`http://user:pass@host/v1`, or `?api_key=...`). Tenants
never see an upstream address at all; operators and logs see only `redact_url(url)`, and the engine
itself keeps the credentials apart from the address it prints.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact_url", "split_credentials"]


def _host(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a port that is no number: keep nothing of it
        port = None
    return parts.scheme, host + (f":{port}" if port is not None else ""), parts.path


def redact_url(url: str | None) -> str | None:
    """`scheme://host[:port]/path`: no user, password, query or fragment (where keys hide)."""
    if url is None:
        return None
    scheme, netloc, path = _host(url)
    return urlunsplit((scheme, netloc, path, "", ""))


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without `user:password@`, and the (user, password) it carried, if any. The query is kept:
    it is part of the address a server may need, and `redact_url` is what goes to logs and people."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    _, netloc, _ = _host(url)
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))
