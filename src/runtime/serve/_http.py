"""HTTP as a deployment sees it: ``Request`` in, a return value out, mapped to a response.

A request crosses from the ingress to a replica as plain strings and bytes (cheap to send),
and the answer comes back as one msgpack blob ``[status, headers, body, streaming]``.
Return values map as API.md says: dict/list (and other JSON values) -> JSON, str -> text,
bytes -> octet-stream, ``Response`` as given, an async generator -> a chunked stream.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from ._exceptions import HTTPException

_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode
_json_encode = msgspec.json.Encoder().encode

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BYTES_TYPE = "application/octet-stream"


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only request headers (the last value wins for repeated names)."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items = items or []
        self._map = {k.lower(): v for k, v in self._items}

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def getlist(self, key: str) -> list[str]:
        """Every value sent for ``key``."""
        k = key.lower()
        return [v for name, v in self._items if name.lower() == k]

    def __repr__(self) -> str:
        return f"Headers({self._map!r})"


class Request:
    """An HTTP request as the ingress deployment receives it.

    ``method``, ``path`` (the full path, route prefix included), ``query_params`` (a dict;
    the last value wins), ``query_string``, ``headers`` (case-insensitive). The body methods
    are coroutines, as in Starlette, so Ray Serve code (``await request.json()``) ports as is.
    """

    __slots__ = ("_body", "_headers", "_wire", "method", "path", "query_string", "route_prefix")

    def __init__(  # noqa: PLR0917 - Request(method, path, query, headers, body) reads naturally
        self,
        method: str,
        path: str,
        query_string: str = "",
        headers: Headers | list[tuple[str, str]] | None = None,
        body: bytes = b"",
        route_prefix: str = "/",
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self._headers: Headers | None = (
            headers if isinstance(headers, Headers) else Headers(headers)
        )
        self._wire = b""
        self._body = body
        self.route_prefix = route_prefix

    @classmethod
    def from_wire(  # noqa: PLR0917 - the wire form of a request, field by field
        cls, method: str, path: str, query: str, headers: bytes, body: bytes, route_prefix: str
    ) -> Request:
        """A request as the proxy sent it; its headers are decoded when first read."""
        request = cls.__new__(cls)
        request.method = method
        request.path = path
        request.query_string = query
        request._headers = None
        request._wire = headers
        request._body = body
        request.route_prefix = route_prefix
        return request

    @property
    def headers(self) -> Headers:
        """The request's headers (case-insensitive)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(_wire_headers(self._wire))
        return headers

    @headers.setter
    def headers(self, value: Headers | list[tuple[str, str]]) -> None:
        self._headers = value if isinstance(value, Headers) else Headers(value)

    @property
    def query_params(self) -> dict[str, str]:
        """The query string as a dict (``?a=1&b=2`` -> ``{"a": "1", "b": "2"}``)."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def url(self) -> str:
        return self.path + ("?" + self.query_string if self.query_string else "")

    async def body(self) -> bytes:
        """The raw body."""
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (400 if it is not)."""
        try:
            return self._body.decode()
        except UnicodeDecodeError as exc:
            raise HTTPException(400, f"the request body is not valid UTF-8: {exc}") from None

    async def json(self) -> Any:
        """The body parsed as JSON (raises ``HTTPException(400)`` if it is not JSON)."""
        try:
            return json.loads(self._body)
        except ValueError as exc:
            raise HTTPException(400, f"the request body is not valid JSON: {exc}") from None

    def __repr__(self) -> str:
        return f"Request({self.method} {self.url})"


class Response:
    """A response exactly as given: ``Response(body, status=200, headers=None, content_type=None)``.

    ``body`` may be bytes, str (UTF-8 text) or a JSON value (dict, list, ...).
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: Any = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        *,
        status_code: int | None = None,
        media_type: str | None = None,
    ) -> None:
        # status_code / media_type: the Starlette spellings, accepted for ported code.
        self.status = int(status_code if status_code is not None else status)
        content_type = content_type or media_type
        h = dict(headers or {})
        if isinstance(body, bytes | bytearray | memoryview):
            data, default_type = bytes(body), BYTES_TYPE
        elif isinstance(body, str):
            data, default_type = body.encode(), TEXT_TYPE
        else:
            data, default_type = _json_encode(body), JSON_TYPE
        if content_type is not None:
            h["Content-Type"] = content_type
        elif not any(k.lower() == "content-type" for k in h):
            h["Content-Type"] = default_type
        self.body = data
        self.headers = h

    def __repr__(self) -> str:
        return f"Response(status={self.status}, {len(self.body)} bytes)"


class StreamingResponse:
    """A streamed answer: ``StreamingResponse(content, status=200, headers=None, media_type=None)``.

    ``content``: a generator or async generator (Starlette's name and arguments). Each item
    is sent as it is produced: str as UTF-8, bytes as is, anything else as JSON. With
    ``media_type="text/event-stream"`` the items are Server-Sent Events: yield
    ``"data: ...\\n\\n"`` strings. A bare generator returned from ``__call__`` streams
    too, as ``text/plain``; so does Starlette's own ``StreamingResponse``.
    """

    __slots__ = ("content", "headers", "status")

    def __init__(
        self,
        content: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        if not (inspect.isgenerator(content) or inspect.isasyncgen(content)):
            raise TypeError(
                f"StreamingResponse takes a generator or async generator, got {content!r}"
            )
        self.content = content
        self.status = int(status_code if status_code is not None else status)
        h = dict(headers or {})
        if media_type is not None:
            h["Content-Type"] = media_type
        elif not any(k.lower() == "content-type" for k in h):
            h["Content-Type"] = TEXT_TYPE
        if h.get("Content-Type", "").startswith("text/event-stream"):
            h.setdefault("Cache-Control", "no-cache")
        self.headers = h

    def __repr__(self) -> str:
        return f"StreamingResponse(status={self.status})"


def encode_request(headers: Any) -> bytes:
    """Pack request headers for the trip to the replica."""
    return _encode([(str(k), v) for k, v in headers.items()])


def encode_raw_headers(raw: Any) -> bytes:
    """Pack request headers as the HTTP parser read them (aiohttp's ``raw_headers``: pairs
    of bytes) for the trip to the replica, which decodes them only if they are read."""
    return _encode(raw)


def _wire_headers(blob: bytes) -> list[tuple[str, str]]:
    """The headers :func:`encode_request` or :func:`encode_raw_headers` packed, as str pairs
    (bytes as aiohttp decodes them: UTF-8, undecodable bytes kept as surrogates)."""
    return [(_text(name), _text(value)) for name, value in _decode(blob)]


def _text(raw: str | bytes) -> str:
    return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw


def decode_request(  # noqa: PLR0917 - the wire form of a request, field by field
    method: str, path: str, query: str, headers: bytes, body: bytes, route_prefix: str
) -> Request:
    return Request.from_wire(method, path, query, headers, body, route_prefix)


def error_body(status: int, error: str, message: str) -> bytes:
    return _json_encode({"error": error, "message": message, "status": status})


def as_streaming(result: Any) -> StreamingResponse | None:
    """``result`` as a streamed answer, if it is one (ours, Starlette's, a bare generator)."""
    if type(result) in _PLAIN:
        return None
    if isinstance(result, StreamingResponse):
        return result
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        return StreamingResponse(result)
    body = getattr(result, "body_iterator", None)
    if body is not None and type(result).__module__.startswith("starlette."):
        out = StreamingResponse.__new__(StreamingResponse)
        out.content = body
        out.status = int(result.status_code)
        out.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in result.raw_headers}
        return out
    return None


#: Answers that are surely not streams (most are).
_PLAIN = frozenset({dict, list, str, bytes, int, float, bool, type(None), Response})


def render(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Map a deployment's return value to (status, headers, body)."""
    if isinstance(result, Response):
        return result.status, list(result.headers.items()), result.body
    if type(result).__module__.startswith("starlette.") and hasattr(result, "raw_headers"):
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in result.raw_headers]
        return int(result.status_code), headers, bytes(result.body)
    if isinstance(result, str):
        return 200, [("Content-Type", TEXT_TYPE)], result.encode()
    if isinstance(result, bytes | bytearray | memoryview):
        return 200, [("Content-Type", BYTES_TYPE)], bytes(result)
    tolist = getattr(result, "tolist", None)  # numpy arrays and scalars: as JSON values
    if callable(tolist) and type(result).__module__ == "numpy":
        result = tolist()
    try:
        body = _json_encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(
            f"a deployment returned {type(result).__name__}, which is not JSON-serializable: "
            "return a dict, list, str, bytes or serve.Response"
        ) from exc
    return 200, [("Content-Type", JSON_TYPE)], body


def render_error(exc: BaseException) -> tuple[int, list[tuple[str, str]], bytes]:
    """An exception raised by user code -> its HTTP answer (HTTPException's status, else 500)."""
    if isinstance(exc, HTTPException):
        return (
            exc.status_code,
            [("Content-Type", JSON_TYPE)],
            error_body(exc.status_code, "HTTPException", exc.detail),
        )
    name = type(exc).__name__
    return 500, [("Content-Type", JSON_TYPE)], error_body(500, name, str(exc))


def pack_answer(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    streaming: bool = False,
    failed: bool = False,
) -> bytes:
    """``failed``: an exception in user code (its text may be hidden from the client)."""
    return _encode((status, headers, body, streaming, failed))


def unpack_answer(blob: bytes) -> tuple[int, list[tuple[str, str]], bytes, bool, bool]:
    status, headers, body, streaming, failed = _decode(blob)
    return status, headers, body, streaming, failed


def chunk_bytes(chunk: Any) -> bytes:
    """One streamed item -> bytes (str as UTF-8, bytes as is, anything else as JSON)."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode()
    tolist = getattr(chunk, "tolist", None)
    if callable(tolist) and type(chunk).__module__ == "numpy":
        chunk = tolist()
    return _json_encode(chunk)
