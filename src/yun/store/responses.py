"""Stored responses of the Responses API, per organization.

Every read and delete names the organization: a response id of another tenant is simply not found, the
same answer as an id that never existed, so ids cannot be probed across tenants. A response is kept
until its organization deletes it (no expiry: OpenAI's 30-day retention is a policy of theirs, not a
contract clients rely on; an operator who wants one deletes old rows by `created_at`).

A response is stored by the request path's group-committing writer (store/money/writer.py), in the batch
of the holds and settlements around it, and is committed before its request answers (read your writes).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, delete, select

from yun.errors import InvalidRequest, NotFound
from yun.store.db import Database
from yun.store.money import ResponseWrite, money_writer
from yun.store.orm import ResponseRow

__all__ = ["ResponseRepository", "StoredResponse"]

_T = cast(Table, ResponseRow.__table__)

MAX_CHAIN = 1000
"""How many responses a `previous_response_id` chain may reach back (each is one indexed read)."""


@dataclass(frozen=True)
class StoredResponse:
    id: str
    org_id: str
    model_id: str
    input_items: list[Any]
    """This response's own input items (not those of the responses it continued), as checked by the API:
    each with an id, text content joined into one part."""
    response: dict[str, Any]
    """The response object as answered (its `output` items are the conversation's next turn)."""
    previous_response_id: str | None = None
    created_at: datetime | None = None


def _record(row: Any) -> StoredResponse:
    created = row.created_at
    if created is not None and created.tzinfo is None:  # SQLite hands back naive datetimes; all are UTC
        created = created.replace(tzinfo=UTC)
    return StoredResponse(
        id=row.id,
        org_id=row.org_id,
        model_id=row.model_id,
        input_items=row.input_items,
        response=row.response,
        previous_response_id=row.previous_response_id,
        created_at=created,
    )


class ResponseRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._writer = money_writer(db)

    def _write(self, stored: StoredResponse) -> tuple[StoredResponse, Future[bool]]:
        stored = replace(stored, created_at=stored.created_at or datetime.now(UTC))
        assert stored.created_at is not None
        row = ResponseWrite(
            id=stored.id,
            org_id=stored.org_id,
            previous_response_id=stored.previous_response_id,
            model_id=stored.model_id,
            input_items=orjson.dumps(stored.input_items).decode(),  # ~10x json.dumps, on the request path
            response=orjson.dumps(stored.response).decode(),
            created_at=stored.created_at,
        )
        return stored, self._writer.store_response(row)

    def submit(self, stored: StoredResponse) -> Future[bool]:
        """Queue a response to store, on the event loop, without waiting: it joins the writer's next batch
        (the settlement queued just before it, say); the future completes once it is committed."""
        return self._write(stored)[1]

    def written(self, future: Future[bool]) -> asyncio.Future[bool]:
        """Await one of `submit`'s futures on the running loop."""
        return self._writer.wait(future)

    def save(self, stored: StoredResponse) -> StoredResponse:
        """Store a response and wait for its commit, blocking (never on the event loop: tools, tests)."""
        stored, written = self._write(stored)
        written.result()
        return stored

    def get(self, org_id: str, response_id: str) -> StoredResponse | None:
        """The organization's response `response_id`, or None (also when another organization owns it)."""
        with self._db.reader.connect() as c:
            row = c.execute(select(_T).where(_T.c.id == response_id, _T.c.org_id == org_id)).first()
        return None if row is None else _record(row)

    def delete(self, org_id: str, response_id: str) -> bool:
        """Delete the organization's response; False when it has none by that id."""
        with self._db.engine.begin() as c:
            result = c.execute(delete(_T).where(_T.c.id == response_id, _T.c.org_id == org_id))
        return bool(result.rowcount)

    def chain(self, org_id: str, response_id: str) -> list[StoredResponse]:
        """The conversation that ends with `response_id`: that response and those it continued, oldest
        first. NotFound (param `previous_response_id`) when it, or a response it continued, is not the
        organization's or was deleted: a conversation with a hole would silently change the answer."""
        out: list[StoredResponse] = []
        next_id: str | None = response_id
        with self._db.reader.connect() as c:
            while next_id is not None:
                if len(out) >= MAX_CHAIN:
                    raise InvalidRequest(
                        f"The conversation of '{response_id}' is longer than {MAX_CHAIN} responses.",
                        param="previous_response_id",
                    )
                row = c.execute(select(_T).where(_T.c.id == next_id, _T.c.org_id == org_id)).first()
                if row is None:
                    which = "" if next_id == response_id else f" (it continues '{next_id}', which is gone)"
                    raise NotFound(
                        f"Previous response with id '{response_id}' not found{which}.", param="previous_response_id"
                    )
                out.append(_record(row))
                next_id = row.previous_response_id
        out.reverse()
        return out
