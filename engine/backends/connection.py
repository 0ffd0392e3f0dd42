"""HTTP to one configured server: its address, connections, JSON calls, and streamed exchanges.

Standard library only (http.client, a helper thread per streamed request). Failures are sorted here:
`Transient` for what is worth retrying (refused connection, 429/5xx, a timeout), `BackendError` with a
message that says what to fix for everything else.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.backends.base import BackendError, ShouldStop

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
POLL_S = 0.02  # how often should_stop() is asked while waiting for the server


# ---- the server's address -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerURL:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/some/prefix", without the trailing /v1

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def path(self, endpoint: str) -> str:
        return self.base_path + endpoint

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_server_url(url: str) -> ServerURL:
    """`http(s)://host[:port][/prefix][/v1]` -> ServerURL. Raises BackendError for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(f"codellama.backend = {url!r} is not an http:// or https:// URL of a server")
    if parts.username or parts.password:
        raise BackendError("codellama.backend must not hold credentials; put the key in codellama.apiKey")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BackendError(f"codellama.backend = {url!r}: bad port ({exc})") from exc
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return ServerURL(parts.scheme, parts.hostname, port, path)


# ---- requests -----------------------------------------------------------------------------------


class Transient(Exception):
    """A failure worth retrying (the server may be restarting or overloaded)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status when the server answered


class Client:
    """Connections to one server, with its API key and timeouts."""

    def __init__(self, server: ServerURL, api_key: str | None, connect_timeout: float, read_timeout: float) -> None:
        self.server = server
        self.api_key = api_key
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def connect(self, read_timeout: float | None = None) -> http.client.HTTPConnection:
        """An open connection to the configured host (raises Transient or BackendError)."""
        server = self.server
        conn: http.client.HTTPConnection
        if server.scheme == "https":
            conn = http.client.HTTPSConnection(server.host, server.port, timeout=self.connect_timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            raise BackendError(f"remote server {server.origin}: TLS failed ({exc.reason or exc})") from None
        except socket.gaierror as exc:
            conn.close()
            raise Transient(f"cannot resolve host {server.host!r} ({exc.strerror})") from None
        except ConnectionRefusedError:
            conn.close()
            raise Transient("connection refused") from None
        except TimeoutError:
            conn.close()
            raise Transient(f"no connection within {self.connect_timeout:g} s") from None
        except OSError as exc:
            conn.close()
            raise Transient(exc.strerror or str(exc)) from None
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout if read_timeout is None else read_timeout)
        return conn

    def send(self, conn: http.client.HTTPConnection, method: str, endpoint: str, payload: dict[str, Any] | None,
             stream: bool = False) -> None:
        headers = {"Accept": "text/event-stream" if stream else "application/json",
                   "User-Agent": "codellama-local"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            # Only ever on this connection, which goes to the configured host: redirects are not followed.
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn.request(method, self.server.path(endpoint), body=body, headers=headers)

    def call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None,
             conn: http.client.HTTPConnection | None = None) -> Any:
        """One small JSON request (probes, tokenize). Returns the decoded body; raises on any failure."""
        own = conn is None
        if conn is None:
            conn = self.connect(self.connect_timeout)
        try:
            self.send(conn, method, endpoint, payload)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            if own:
                conn.close()
        if resp.status != 200:
            self.raise_for_status(resp, body, endpoint)
        return json.loads(body)

    # ---- what a failure means -------------------------------------------------------------------

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no data for {self.read_timeout:g} s (read timeout)"
        if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
            return "the server closed the connection"
        if isinstance(exc, http.client.IncompleteRead):
            return "the server closed the connection in the middle of a chunk"
        if isinstance(exc, OSError):
            return exc.strerror or str(exc)
        return f"{type(exc).__name__}: {exc}"

    def connection_error(self, exc: BaseException, endpoint: str) -> Exception:
        if isinstance(exc, (Transient, BackendError)):
            return exc
        if isinstance(exc, TimeoutError):
            return Transient(f"no response within {self.read_timeout:g} s (read timeout)")
        if isinstance(exc, (OSError, http.client.HTTPException)):
            return Transient(self.describe(exc))
        return BackendError(f"remote server {self.server.origin}: {endpoint}: {self.describe(exc)}")

    def raise_for_status(self, resp: http.client.HTTPResponse, body: bytes, endpoint: str) -> None:
        status, origin = resp.status, self.server.origin
        detail = error_text(_json_or_text(body)) or resp.reason
        if 300 <= status < 400:
            where = resp.getheader("Location") or "another address"
            raise BackendError(
                f"remote server {origin} redirected {endpoint} to {where}; redirects are not followed (the API "
                "key goes to the configured host only). Set codellama.backend to the final URL.")
        if status in TRANSIENT_STATUS:
            raise Transient(f"HTTP {status} ({detail})", status)
        if status in (401, 403):
            hint = "check codellama.apiKey" if self.api_key else "the server wants an API key: set codellama.apiKey"
            raise BackendError(f"remote server {origin} refused the request: HTTP {status} ({detail}); {hint}")
        if status == 404:
            raise BackendError(f"remote server {origin} has no {endpoint} (HTTP 404: {detail}); is "
                               "codellama.backend the base URL of an OpenAI-compatible server?")
        raise BackendError(f"remote server {origin}: {endpoint} failed with HTTP {status} ({detail})")


EOF = object()  # what Exchange.next returns once the response has ended


class Exchange:
    """One HTTP request whose response arrives, line by line, on a queue filled by a helper thread.

    The caller polls the queue and `should_stop()` in turn, so it can give up at any moment, even while
    the server is still prefilling and has sent nothing: `close()` shuts the socket down, which ends the
    helper thread and tells the server the client is gone.
    """

    def __init__(self, client: Client, method: str, endpoint: str, payload: dict[str, Any]) -> None:
        self.client = client
        self.method, self.endpoint, self.payload = method, endpoint, payload
        self.items: queue.Queue[Any] = queue.Queue()
        self.conn: http.client.HTTPConnection | None = None
        # Kept apart: http.client hands an HTTP/1.0 response its socket and forgets it (conn.sock = None).
        self.sock: socket.socket | None = None
        self.resp: http.client.HTTPResponse | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="remote-backend-http", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn = self.client.connect()
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.conn, self.sock = conn, conn.sock
            self.client.send(conn, self.method, self.endpoint, self.payload, stream=True)
            resp = conn.getresponse()
            with self._lock:
                self.resp = resp
                if self._closed:
                    resp.close()
                    return
            self.items.put(("status", resp))
            if resp.status != 200:
                self.items.put(("body", resp.read(8192)))
                return
            while True:
                line = resp.readline(1 << 20)
                if not line:
                    self.items.put(EOF)
                    return
                self.items.put(line)
        except BaseException as exc:  # handed to the caller, who decides what it means
            self.items.put(exc)

    def next(self, should_stop: ShouldStop) -> Any:
        """The next item (a response, a line, EOF or an exception); None once should_stop() says so."""
        while True:
            if should_stop():
                return None
            try:
                return self.items.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def close(self) -> None:
        """Hang up: shutdown() wakes the helper thread blocked in recv(); closing the response and the
        connection drops the last references to the socket, so it really closes (the server sees it)."""
        with self._lock:
            self._closed = True
            conn, sock, resp = self.conn, self.sock, self.resp
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for part in (resp, conn, sock):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass


def _json_or_text(body: bytes) -> Any:
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:300]


def error_text(obj: Any) -> str:
    """The human part of an error body: OpenAI {"error": {"message"}}, FastAPI {"detail"}, plain text."""
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            return str(err.get("message") or err.get("msg") or json.dumps(err)[:300])
        if isinstance(err, list) and err:
            return str(err[0].get("msg") if isinstance(err[0], dict) else err[0])[:300]
        if err is not None:
            return str(err)[:300]
        return json.dumps(obj)[:300]
    return str(obj)[:300] if obj else ""
