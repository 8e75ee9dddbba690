"""A small HTTPS server base for the simulators: routing, JSON, and generic fault injection.

Why not a web framework: the simulators must control status codes, headers and even dropped connections
exactly, and stay dependency-free beyond the standard library. Faults live here once for both simulators,
under `/_sandbox/faults`:

- `POST /_sandbox/faults` `{"kind": "status", "status": 429, "retry_after": 1, "count": 2,
  "method": "GET", "path": "/referrals", "body": {...}}` answers the next `count` matching requests with
  that status (and `Retry-After` when given);
- `{"kind": "slow", "delay": 1.5, ...}` delays matching requests, then answers normally;
- `{"kind": "reset", ...}` closes the connection without an answer (a timeout or a reset to the client);
- `GET /_sandbox/faults` lists what is pending, `DELETE /_sandbox/faults` clears it.
`path` is a prefix of the request path; `method` and `path` are optional filters.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024 * 1024


@dataclass
class Request:
    """One HTTP request as a route handler sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    base_url: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body parsed as JSON; raises `HttpError(400)` when it is not."""
        try:
            return json.loads(self.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, {"error": "invalid_json", "message": str(exc)}) from None


@dataclass
class Response:
    """What a route handler returns; a dict or list body is sent as JSON."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.body is None:
            return b"", headers
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode("utf-8"), headers
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(self.body).encode("utf-8"), headers


class HttpError(Exception):
    """Raised by a handler to answer with an error status and body."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.response = Response(status, body, headers or {})


Handler = Callable[[Request], Response]


class Router:
    """Maps (method, path template) to handlers; `{name}` matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

        def register(handler: Handler) -> Handler:
            self._routes.append((method.upper(), pattern, handler))
            return handler

        return register

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if not match:
                continue
            allowed = True
            if method != request.method:
                continue
            request.params = match.groupdict()
            return handler(request)
        if allowed:
            raise HttpError(405, {"error": "method_not_allowed"})
        raise HttpError(404, {"error": "not_found", "path": request.path})


@dataclass
class Fault:
    """One pending fault; see the module docstring for the JSON form."""

    kind: str
    count: int = 1
    method: str | None = None
    path: str = ""
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    body: Any = None

    def matches(self, request: Request) -> bool:
        return (self.method is None or self.method.upper() == request.method) and request.path.startswith(self.path)


class FaultPlan:
    """Thread-safe list of pending faults, consumed by matching requests."""

    KINDS = ("status", "slow", "reset")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.injected = 0

    def add(self, spec: dict[str, Any]) -> Fault:
        try:
            fault = Fault(**spec)
        except TypeError as exc:
            raise HttpError(400, {"error": "bad_fault", "message": str(exc)}) from None
        if fault.kind not in self.KINDS or fault.count < 1:
            raise HttpError(400, {"error": "bad_fault", "message": f"kind must be one of {self.KINDS}, count >= 1"})
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(request):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    self.injected += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [vars(f).copy() for f in self._faults]


class _ConnectionReset(Exception):
    pass


class SimServer:
    """A threaded HTTPS server running a `Router`, with `/_sandbox/faults` added.

    Args:
        router: the simulator's routes.
        port: 0 picks a free port.
        ssl_context: from `SandboxCA.server_ssl_context()`; None serves plain HTTP (tests of the base only).
        host: the address to bind (always loopback here).
    """

    def __init__(self, router: Router, *, port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        self.router = router
        self.faults = FaultPlan()
        self._add_fault_routes()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if ssl_context is not None else "http"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> SimServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sim-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the simulators' command lines)."""
        try:
            self._httpd.serve_forever(poll_interval=0.05)
        except KeyboardInterrupt:
            pass
        finally:
            self._httpd.server_close()

    def _add_fault_routes(self) -> None:
        @self.router.route("GET", "/_sandbox/faults")
        def list_faults(_: Request) -> Response:
            return Response(200, {"pending": self.faults.pending(), "injected": self.faults.injected})

        @self.router.route("POST", "/_sandbox/faults")
        def add_fault(request: Request) -> Response:
            return Response(201, vars(self.faults.add(request.json())))

        @self.router.route("DELETE", "/_sandbox/faults")
        def clear_faults(_: Request) -> Response:
            self.faults.clear()
            return Response(204)

    def handle(self, request: Request) -> Response:
        """Apply a pending fault, then the route; errors become their responses."""
        fault = None if request.path.startswith("/_sandbox/") else self.faults.take(request)
        if fault is not None:
            if fault.kind == "reset":
                raise _ConnectionReset
            if fault.kind == "slow":
                time.sleep(fault.delay)
            else:
                headers = {"Retry-After": str(int(fault.retry_after))} if fault.retry_after is not None else {}
                return Response(fault.status, fault.body if fault.body is not None else {"error": "injected"},
                                headers)
        try:
            return self.router.dispatch(request)
        except HttpError as exc:
            return exc.response

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # small answers leave at once, not after the 40 ms delayed-ACK wait

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                """Quiet: the simulators are chatty enough through their own logs."""

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._send(Response(413, {"error": "body_too_large"}))
                    return
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    base_url=server.url,
                )
                try:
                    response = server.handle(request)
                except _ConnectionReset:
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(response)

            def _send(self, response: Response) -> None:
                payload, headers = response.encode()
                self.send_response(response.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        return _Handler


__all__ = ["Fault", "FaultPlan", "HttpError", "Request", "Response", "Router", "SimServer"]
