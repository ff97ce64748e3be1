"""The live event stream of a hosted model (``GET /models/{id}/events``,
server-sent events): :class:`EventStream` for :class:`qlearn.Client`,
:class:`AsyncEventStream` for :class:`qlearn.AsyncClient`.

The stream is opened with the client's ``Authorization`` header. When that
credential stops working (token expiry, password change, key deletion) the
server sends a last ``event: end`` frame and closes the stream: iteration
then stops without an exception, and ``stream.end`` holds the
:class:`qlearn.types.EndEvent` (its ``reason``, e.g. ``credential_revoked``).
Authenticate again and open a new stream to go on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Optional, Union

from ._calls import _Call, _error, _nothing
from .errors import ConnectionFailed
from ._convert import _id
from .types import EndEvent, LaggedEvent, UpdateEvent, from_json


def _ended() -> ConnectionFailed:
    return ConnectionFailed("the event stream ended before the server confirmed the subscription")


class _SseParser:
    """Lines of ``text/event-stream`` -> events (``update``, ``lagged``)."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []
        self.connected = False

    def line(self, line: str) -> Optional[Union[UpdateEvent, LaggedEvent, EndEvent]]:
        if line.startswith(":"):
            self.connected = self.connected or line[1:].strip() == "connected"
            return None
        if line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self.event = value
            elif name == "data":
                self.data.append(value)
            return None
        event, data = self.event, "\n".join(self.data)
        self.event, self.data = "message", []
        if not data:
            return None
        doc = json.loads(data)
        if event == "update":
            return from_json(UpdateEvent, doc)
        if event == "lagged":
            return from_json(LaggedEvent, doc)
        if event == "end":
            return from_json(EndEvent, doc)
        return None


class _Stream:
    def __init__(self, client: Any, model_id: str) -> None:
        self._client = client
        self._model_id = model_id
        self._cm: Any = None
        self._lines: Any = None
        self._parser = _SseParser()
        #: The ``event: end`` frame that ended the stream, if one did.
        self.end: Optional[EndEvent] = None

    def _request(self) -> Any:
        """The streaming request (no read timeout: the server sends a
        keep-alive comment every 15 s)."""
        call = _Call("GET", f"/models/{_id(self._model_id)}/events", _nothing)
        client = self._client
        return client._http.stream("GET", call.path,
                                   headers={**client._headers(call), "Accept": "text/event-stream"},
                                   timeout=client._httpx.Timeout(client.timeout, read=None))


class EventStream(_Stream):
    """The live updates of a model (``GET /models/{id}/events``):
    ``with client.events(id) as stream: for event in stream: ...``. Opening
    waits until the server has subscribed the stream, so every update made
    after ``open()``/``__enter__`` returns is delivered. Iteration ends
    cleanly on the server's ``event: end`` (the credential expired or was
    revoked), which is then kept in ``end``."""

    def open(self) -> EventStream:
        self._cm = self._request()
        r = self._cm.__enter__()
        if r.status_code != 200:
            r.read()
            self.close()
            raise _error(r)
        self._lines = r.iter_lines()
        while not self._parser.connected:
            line = next(self._lines, None)
            if line is None:
                self.close()
                raise _ended()
            self._parser.line(line)
        return self

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)

    def __enter__(self) -> EventStream:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Union[UpdateEvent, LaggedEvent]]:
        if self._lines is None:
            self.open()
        for line in self._lines:
            event = self._parser.line(line)
            if isinstance(event, EndEvent):
                self.end = event
                self.close()
                return
            if event is not None:
                yield event


class AsyncEventStream(_Stream):
    """:class:`EventStream` for :class:`AsyncClient`: ``async with`` and ``async for``."""

    async def open(self) -> AsyncEventStream:
        self._cm = self._request()
        r = await self._cm.__aenter__()
        if r.status_code != 200:
            await r.aread()
            await self.close()
            raise _error(r)
        self._lines = r.aiter_lines()
        while not self._parser.connected:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                await self.close()
                raise _ended() from None
            self._parser.line(line)
        return self

    async def close(self) -> None:
        if self._cm is not None:
            cm, self._cm = self._cm, None
            await cm.__aexit__(None, None, None)

    async def __aenter__(self) -> AsyncEventStream:
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Union[UpdateEvent, LaggedEvent]]:
        if self._lines is None:
            await self.open()
        async for line in self._lines:
            event = self._parser.line(line)
            if isinstance(event, EndEvent):
                self.end = event
                await self.close()
                return
            if event is not None:
                yield event
