"""The shared part of the stand-ins: a threaded HTTP server on 127.0.0.1 that plays a script of turns.

A test gives the stand-in a list of :class:`Turn` objects; each model request takes the next one
(the last one repeats when the script runs out).  Every request is recorded (path, headers, the
decoded JSON body) so a test can check what the CLI sent, e.g. that an agent's definition reached
the system prompt.  Requests the script does not cover (token counting, side calls) get a small
answer from :meth:`StandIn.side_request` and take no turn.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ("Kind", "Recorded", "StandIn", "Turn")


class Kind(StrEnum):
    """What the model does on one request."""

    TEXT = "text"          # answer with text and end the turn
    TOOL = "tool"          # call a tool (name, input), the CLI runs it and asks again
    STATUS = "status"      # answer with an HTTP error status (429, 529, 500) and an error body
    HANG = "hang"          # accept the request and never answer
    CUT = "cut"            # start streaming, then close the connection mid-stream
    FAILED = "failed"      # (Responses API) a response.failed event


@dataclass(frozen=True)
class Turn:
    """One scripted model turn."""

    kind: Kind
    text: str = ""
    name: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    delay: float = 0.0     # seconds to wait before answering (a session that takes time)

    @classmethod
    def say(cls, text: str) -> Turn:
        return cls(Kind.TEXT, text=text)

    @classmethod
    def tool(cls, name: str, **arguments: Any) -> Turn:
        return cls(Kind.TOOL, name=name, input=arguments)

    @classmethod
    def error(cls, status: int, text: str = "") -> Turn:
        return cls(Kind.STATUS, status=status, text=text)


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class StandIn:
    """A scripted model API on ``http://127.0.0.1:<port>``; use as a context manager."""

    def __init__(self, turns: list[Turn] | None = None, *, admit: int = 0, session_seconds: float = 0.0) -> None:
        """``admit`` > 0: a capacity mode — at most ``admit`` model requests in flight, each answered
        after ``session_seconds`` with the script's turn; one more is answered 429 at once."""
        self.turns: list[Turn] = list(turns or [Turn.say("done")])
        self.admit = admit
        self.session_seconds = session_seconds
        self.in_flight = 0
        self.peak_in_flight = 0
        self.admitted = 0
        self.rejected = 0
        self.requests: list[Recorded] = []
        self.model_requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> StandIn:
        handler = _make_handler(self)
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # releases hanging handlers
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *turns: Turn) -> None:
        """Replace the script (and start it from its first turn)."""
        with self._lock:
            self.turns = list(turns)
            self._next = 0

    def take_turn(self) -> Turn:
        with self._lock:
            turn = self.turns[min(self._next, len(self.turns) - 1)]
            self._next += 1
            return turn

    def serve_within_capacity(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        """The capacity mode: admit up to ``admit`` sessions at once, 429 beyond them."""
        with self._lock:
            admitted = self.in_flight < self.admit
            if admitted:
                self.in_flight += 1
                self.admitted += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            else:
                self.rejected += 1
        if not admitted:
            self.answer(handler, Turn.error(429, "capacity exceeded"), body)
            return
        try:
            if self.wait_stopped(self.session_seconds):
                return
            self.answer(handler, self.take_turn(), body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def wait_stopped(self, seconds: float) -> bool:
        """Block a handler (a hang) until the stand-in closes or ``seconds`` pass; True when closed."""
        return self._stop.wait(seconds)

    # ------------------------------------------------------------ to override

    def is_model_request(self, method: str, path: str) -> bool:
        raise NotImplementedError

    def answer(self, handler: BaseHTTPRequestHandler, turn: Turn, body: Any) -> None:
        raise NotImplementedError

    def side_request(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: Any) -> None:
        send_json(handler, 200, {})


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when dozens of agents connect at once.
    request_queue_size = 256


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def start_sse(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("cache-control", "no-cache")
    handler.send_header("connection", "close")
    handler.end_headers()
    handler.close_connection = True


def send_event(handler: BaseHTTPRequestHandler, event: str, data: dict[str, Any]) -> None:
    handler.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
    handler.wfile.flush()


def _make_handler(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            record = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            model = stand_in.is_model_request(self.command, self.path)
            with stand_in._lock:
                stand_in.requests.append(record)
                if model:
                    stand_in.model_requests.append(record)
            try:
                if not model:
                    stand_in.side_request(self, self.command, self.path, body)
                    return
                if stand_in.admit > 0:
                    stand_in.serve_within_capacity(self, body)
                    return
                turn = stand_in.take_turn()
                if turn.delay and stand_in.wait_stopped(turn.delay):
                    return
                if turn.kind is Kind.HANG:
                    stand_in.wait_stopped(3600)
                    self.close_connection = True
                    return
                stand_in.answer(self, turn, body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_HEAD = do_PUT = _handle

    return Handler
