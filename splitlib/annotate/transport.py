"""One HTTP client per request, with a deadline on the whole request.

An HTTP library's timeout bounds each wait for bytes, not the request: a server that sends one byte every half
second holds a "2 s timeout" request for as long as its reply lasts. ``DeadlineClient`` gives each request its own
client and a timer; when the deadline passes (or ``abort()`` is called, e.g. by a cancelled run) it shuts down the
request's sockets and closes the client, so that the read blocked in the requesting thread fails at once.

Shutting the sockets down is the part that wakes that thread: on Linux, closing a socket that another thread is
waiting on does not end the wait. The sockets are learnt from the HTTP core's ``trace`` hook (the streams it
opens for TCP and TLS), attached to each request by a request event hook of the client.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

log = logging.getLogger(__name__)

# trace events of the HTTP core whose return value is a freshly opened network stream
_OPENED = (".connect_tcp.complete", ".start_tls.complete")


class DeadlineClient:
    """``with DeadlineClient(timeout_s, make_client) as d: d.http.post(...)``: the request ends by ``timeout_s``.

    ``make_client(timeout=..., event_hooks=...)`` builds the HTTP client (an ``httpx``-style client such as
    ``openai.DefaultHttpxClient``). After a failed request, ``expired`` says whether the deadline ended it and
    ``aborted`` whether anything did (the deadline or ``abort()``).
    """

    def __init__(self, timeout_s: float, make_client: Callable[..., Any]) -> None:
        self.timeout_s = timeout_s
        self.expired = False
        self.aborted = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        # the client's own timeout stays as a backstop: no single wait outlasts the deadline either
        self.http = make_client(timeout=timeout_s, event_hooks={"request": [self._attach]})
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Self:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._timer.cancel()
        self.http.close()

    def abort(self) -> None:
        """End the request now: shut its sockets down and close the client (safe from any thread, repeatable)."""
        with self._lock:
            self.aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)
        try:
            self.http.close()
        except Exception:  # a client closed under a running request may complain: the request ends anyway
            log.debug("closing an aborted request's client raised", exc_info=True)

    def _expire(self) -> None:
        self.expired = True
        self.abort()

    def _attach(self, request: Any) -> None:
        request.extensions["trace"] = self._trace

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith(_OPENED):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            aborted = self.aborted
        if aborted:  # the deadline passed while this connection was being opened
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed, or a plain socket that TLS has taken over
        pass
