"""A multipart/form-data body as a stream of parts, parsed as its bytes arrive (python-multipart).

Starlette's own form parser spools every file to a temporary file before the handler runs; an upload here
goes straight from the socket to the file store instead, a chunk at a time, so nothing holds it whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from yun.errors import InvalidRequest

__all__ = ["Begin", "Data", "End", "Event", "boundary_of", "parts"]


@dataclass(frozen=True)
class Begin:
    """A part starts: its form field name, and its filename when it is a file."""

    name: str
    filename: str | None


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class End:
    pass


Event = Begin | Data | End

_END = End()
_HINT = "Upload the file as multipart/form-data with the fields 'file' and 'purpose'."


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(f"{_HINT} (Content-Type was {content_type or 'missing'}.)", param="file")
    return boundary


class _Collector:
    """python-multipart's callbacks, turned into the events of the chunk just written."""

    def __init__(self) -> None:
        self.pending: list[Event] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda data, start, end: self.pending.append(Data(data[start:end])),
            "on_part_end": lambda: self.pending.append(_END),
        }

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        self._headers.clear()
        name = options.get(b"name")
        if name is None:
            raise InvalidRequest(f"{_HINT} (A part has no form field name.)", param="file")
        filename = options.get(b"filename")
        self.pending.append(
            Begin(name.decode("utf-8", "replace"), None if filename is None else filename.decode("utf-8", "replace"))
        )

    def take(self) -> list[Event]:
        events, self.pending = self.pending, []
        return events


def _malformed(exc: MultipartParseError) -> InvalidRequest:
    return InvalidRequest(f"{_HINT} (The multipart body is malformed: {exc}.)", param="file")


async def parts(boundary: bytes, body: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    """The parts of the body, in order: Begin, its Data chunks, End; then the next part."""
    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    async for chunk in body:
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise _malformed(exc) from None
        for event in collector.take():
            yield event
    try:
        parser.finalize()
    except MultipartParseError as exc:
        raise _malformed(exc) from None
    for event in collector.take():
        yield event
