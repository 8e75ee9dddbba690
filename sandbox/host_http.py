"""HTTP triggers of the local host: route templates, methods, function keys, and the server.

Why the real host's rules rather than something simpler: the webhook receiver and the status page
are tested through this host, so `{param?}`, literal-before-parameter matching, 404 vs 405 and 401
must behave as they will on Azure.
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

from sandbox.host_index import HostedFunction, Worker, log_invocation
from shared.errors import ConfigError, Unavailable

log = logging.getLogger("sandbox.host")

_PARAM = re.compile(r"\{(?P<name>[A-Za-z_]\w*)(?P<optional>\?)?\}")
_REQUEST_ID_HEADERS = ("x-ms-client-request-id", "x-request-id", "request-id")
_KEYED_LEVELS = ("function", "admin")


@dataclass(frozen=True)
class Route:
    """One HTTP function's route, compiled.

    Attributes:
        methods: upper-case method names; empty means every method (as when `methods` is not given).
        rank: sorts literal segments before parameters, so `items/new` wins over `items/{id}`.
    """

    function: HostedFunction
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    auth_level: str
    rank: tuple[int, ...]

    @classmethod
    def compile(cls, function: HostedFunction, prefix: str) -> Route:
        """Turn `items/{id?}` under prefix `api` into a regex; `{name}` and `{name?}` are supported.

        Raises:
            ConfigError: a route using what the local host does not (constraints, catch-all).
        """
        trigger = function.trigger
        template = "/".join(part for part in (prefix, trigger.route.strip("/")) if part)
        regex, rank = "", []
        for segment in template.split("/") if template else []:
            whole = _PARAM.fullmatch(segment)
            if set("{}") & set(_PARAM.sub("", segment)):
                raise ConfigError(f"function {function.name}: route segment {segment!r} uses more than "
                                  "{name} and {name?}, which is all the local host supports")
            if whole and whole["optional"]:
                regex += f"(?:/(?P<{whole['name']}>[^/]+))?"
                rank.append(2)
            else:
                regex += "/" + _segment_regex(segment)
                rank.append(1 if _PARAM.search(segment) else 0)
        methods = frozenset(str(method).upper() for method in trigger.methods or ())
        auth_level = str(trigger.auth_level or func.AuthLevel.FUNCTION).lower()
        return cls(function, "/" + template, re.compile(f"^{regex}/?$", re.IGNORECASE), methods, auth_level,
                   tuple(rank))

    def describe(self, base_url: str) -> str:
        methods = ",".join(sorted(self.methods)) or "ALL"
        return f"[{methods}] {base_url}{self.template} ({self.auth_level})"


def _segment_regex(segment: str) -> str:
    regex, position = "", 0
    for match in _PARAM.finditer(segment):
        regex += re.escape(segment[position:match.start()]) + f"(?P<{match['name']}>[^/]+?)"
        position = match.end()
    return regex + re.escape(segment[position:])


class HttpFrontEnd:
    """Serves the HTTP functions on 127.0.0.1:port until `stop()`.

    Args:
        function_key: when set, function- and admin-level routes need it (`?code=` or `x-functions-key`;
            there is no separate master key locally); when None, keys are not checked, as under `func start`.
        worker: where the functions run.
    """

    def __init__(self, routes: Sequence[Route], *, port: int, bind: str, function_key: str | None,
                 worker: Worker) -> None:
        self.routes = sorted(routes, key=lambda route: route.rank)
        self.function_key = function_key
        self.worker = worker
        try:
            self._server = _Server((bind, port), _Handler)
        except OSError as exc:
            raise Unavailable(f"cannot listen on {bind}:{port} ({exc.strerror}): stop what uses the port "
                              "or pass another --port") from None
        self._server.front_end = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="host-http")

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, then wait for requests in flight (server_close joins their threads)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.end_keep_alive()
        self._server.server_close()

    def respond(self, method: str, raw_path: str, headers: dict[str, str], body: bytes,
                base_url: str) -> tuple[int, dict[str, str], bytes]:
        """Route one request and run its function; returns status, headers and body."""
        url = urlsplit(raw_path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        allowed: set[str] = set()
        for route in self.routes:
            match = route.pattern.match(url.path)
            if not match:
                continue
            if route.methods and method not in route.methods:
                allowed |= route.methods
                continue
            if not self._authorized(route, params, headers):
                log.info("%s %s -> 401 (%s needs the function key as ?code= or x-functions-key)", method, url.path,
                         route.function.name)
                return 401, {}, b""
            route_params = {name: unquote(value) for name, value in match.groupdict().items() if value is not None}
            return self._run(route, method, url.path, base_url + raw_path, headers, params, route_params, body)
        if allowed:
            log.info("%s %s -> 405 (the route takes %s)", method, url.path, ", ".join(sorted(allowed)))
            return 405, {"Allow": ", ".join(sorted(allowed))}, b"Method Not Allowed"
        log.info("%s %s -> 404 (no function has this route)", method, url.path)
        return 404, {}, b"Not Found"

    def _authorized(self, route: Route, params: dict[str, str], headers: dict[str, str]) -> bool:
        if self.function_key is None or route.auth_level not in _KEYED_LEVELS:
            return True
        given = params.get("code") or _header(headers, "x-functions-key") or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())

    def _run(self, route: Route, method: str, path: str, url: str, headers: dict[str, str],
             params: dict[str, str], route_params: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = func.HttpRequest(method, url, headers=headers, params=params, route_params=route_params, body=body)
        outcome = self.worker.invoke(route.function, request)
        status, response_headers, response_body = 500, {}, b"Internal Server Error: the function failed (see the host log)"
        if outcome.error is None:
            status, response_headers, response_body = _http_response(outcome.result)
        request_id = next((value for name in _REQUEST_ID_HEADERS if (value := _header(headers, name))), None)
        detail = f"{method} {path}" + (f" request-id {request_id}" if request_id else "")
        log_invocation(route.function, outcome, detail, f"-> {status}")
        return status, response_headers, response_body


def _http_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """What the worker does with a function's return value for the `$return` http output."""
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers.items())
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return result.status_code, headers, result.get_body()
    if isinstance(result, (str, bytes)):
        body = result.encode() if isinstance(result, str) else result
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, body
    if result is None:
        return 204, {}, b""
    return 500, {}, f"Internal Server Error: the function returned {type(result).__name__}, not func.HttpResponse".encode()


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name), None)


class _Server(ThreadingHTTPServer):
    # Non-daemon request threads, so `server_close()` waits for them: no thread outlives `stop()`.
    daemon_threads = False
    # socketserver's default listen backlog is 5: the 6th simultaneous connection of a burst waited for the
    # kernel's SYN retry (1 s, measured: p99 1.16 s for 50 at a time). Kestrel, in front of the real host,
    # accepts hundreds.
    request_queue_size = 512
    front_end: HttpFrontEnd

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def end_keep_alive(self) -> None:
        """Make every connection's wait for a next request end now (a request being answered still gets its
        answer), so that `server_close()` need not wait out idle kept-alive connections."""
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RD)
                except OSError:  # the client has closed it already
                    pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, as Kestrel in front of the real host: a sender that reuses its connection (Partner Center's
    # deliveries, a burst's 50 senders) does not pay a TCP handshake and a new thread for every request.
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Kestrel sets by default: the headers and the body go out in two writes, and with Nagle's
    # algorithm the body waited for the client's delayed ACK of the headers, 40 ms a kept-alive request.
    disable_nagle_algorithm = True
    timeout = 30  # a client that connects and sends nothing cannot hold shutdown forever

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "Bad Request", "the chunked body is malformed")
            return
        host, port = self.server.server_address[:2]
        status, headers, payload = self.server.front_end.respond(
            self.command, self.path, dict(self.headers.items()), body, f"http://{host}:{port}")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def _read_body(self) -> bytes:
        """The body, by Content-Length or chunked (read to its end either way: on a kept-alive connection, unread
        bytes would be taken for the next request).

        Raises:
            ValueError: a chunk size that is not hexadecimal.
        """
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after the chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, up to the empty line
            pass
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silenced: each invocation already logs one line, without the query string (it may hold a key)."""


__all__ = ["HttpFrontEnd", "Route"]
