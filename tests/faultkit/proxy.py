"""A loopback TCP proxy that can stall, drop or reset traffic between a client and a server.

One background thread runs a selectors loop; control calls (pause, blackhole, reset_all ...) are handed
to that thread and return only once it has applied them, so a test can act on the new state at once.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["TcpProxy"]

_CHUNK_BYTES = 64 * 1024
# Past this many buffered bytes per direction the proxy stops reading and lets TCP push back.
_BUFFER_CAP_BYTES = 1024 * 1024
_CONTROL_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 5.0


class _Mode(enum.Enum):
    FORWARD = "forward"
    PAUSED = "paused"
    BLACKHOLE = "blackhole"


class _Side(enum.Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"


class _Pipe:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.connecting = False
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False
        self.upstream_eof = False
        self.upstream_shut = False
        self.client_shut = False
        self.client_events = 0
        self.upstream_events = 0
        self.closed = False


class TcpProxy:
    """Forward 127.0.0.1:port to an upstream server, with switchable faults.

    resume() and heal() both return to normal forwarding, whichever fault is active.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._commands: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._pipes: set[_Pipe] = set()
        self._mode = _Mode.FORWARD
        self._stopping = False
        self._closed = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("proxy is not started")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """Client connections the proxy holds open; a client's close during pause/blackhole is held too."""
        return len(self._pipes)

    def start(self) -> None:
        if self._thread is not None or self._closed:
            raise RuntimeError("proxy can only be started once")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(listener, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._call(self._request_stop)
            thread.join(_JOIN_TIMEOUT_S)
        for pipe in list(self._pipes):
            self._close_pipe(pipe, abrupt=False)
        if self._listener is not None:
            self._listener.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        if thread is not None and thread.is_alive():
            raise RuntimeError("proxy thread did not stop")

    def pause(self) -> None:
        """Stop forwarding both ways; bytes stay buffered and new connections wait for resume()."""
        self._call(lambda: self._set_mode(_Mode.PAUSED))

    def resume(self) -> None:
        self._call(lambda: self._set_mode(_Mode.FORWARD))

    def blackhole(self) -> None:
        """Silently drop every byte both ways, buffered ones included, until heal()."""
        self._call(lambda: self._set_mode(_Mode.BLACKHOLE))

    def heal(self) -> None:
        self._call(lambda: self._set_mode(_Mode.FORWARD))

    def reset_all(self) -> None:
        """Close every current connection with a TCP RST on both sides; later connections work."""
        self._call(self._reset_all)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- control, executed on the loop thread -------------------------------------------------------

    def _call(self, command: Callable[[], None]) -> None:
        if self._failure is not None:
            raise RuntimeError("proxy loop crashed") from self._failure
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("proxy is not running")
        done = threading.Event()
        self._commands.put((command, done))
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")
        if not done.wait(_CONTROL_TIMEOUT_S):
            raise RuntimeError("proxy loop did not answer")
        if self._failure is not None:
            raise RuntimeError("proxy loop crashed") from self._failure

    def _request_stop(self) -> None:
        self._stopping = True

    def _set_mode(self, mode: _Mode) -> None:
        self._mode = mode
        if mode is _Mode.BLACKHOLE:
            for pipe in self._pipes:
                pipe.to_upstream.clear()
                pipe.to_client.clear()

    def _reset_all(self) -> None:
        for pipe in list(self._pipes):
            self._close_pipe(pipe, abrupt=True)

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            finally:
                done.set()

    # -- event loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._sel.select():
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._run_commands()
                    else:
                        pipe, side = key.data
                        self._on_ready(pipe, side, events)
                for pipe in list(self._pipes):
                    self._pump(pipe)
                    if not pipe.closed:
                        self._update_interest(pipe)
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            # Nobody will run queued commands any more; release their callers.
            while not self._commands.empty():
                self._commands.get_nowait()[1].set()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipes.add(_Pipe(client))

    def _on_ready(self, pipe: _Pipe, side: _Side, events: int) -> None:
        if pipe.closed:
            return
        if side is _Side.UPSTREAM and pipe.connecting:
            if events & selectors.EVENT_WRITE:
                self._finish_connect(pipe)
            return
        if events & selectors.EVENT_READ:
            self._receive(pipe, side)

    def _connect_upstream(self, pipe: _Pipe) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = upstream.connect_ex(self._upstream)
        pipe.upstream = upstream
        if err not in (0, errno.EINPROGRESS):
            self._close_pipe(pipe, abrupt=True)
            return
        pipe.connecting = err != 0

    def _finish_connect(self, pipe: _Pipe) -> None:
        assert pipe.upstream is not None
        if pipe.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            # The client sees a reset, the closest thing to the refusal the proxy just got.
            self._close_pipe(pipe, abrupt=True)
            return
        pipe.connecting = False

    def _receive(self, pipe: _Pipe, side: _Side) -> None:
        sock = pipe.client if side is _Side.CLIENT else pipe.upstream
        assert sock is not None
        try:
            data = sock.recv(_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_pipe(pipe, abrupt=True)
            return
        if not data:
            if side is _Side.CLIENT:
                pipe.client_eof = True
            else:
                pipe.upstream_eof = True
        elif self._mode is not _Mode.BLACKHOLE:
            (pipe.to_upstream if side is _Side.CLIENT else pipe.to_client).extend(data)

    def _pump(self, pipe: _Pipe) -> None:
        # Moves buffered bytes and pending half-closes along, if forwarding is on.
        if pipe.closed or self._mode is not _Mode.FORWARD:
            return
        if pipe.upstream is None:
            self._connect_upstream(pipe)
        if pipe.closed or pipe.connecting or pipe.upstream is None:
            return
        if not self._send(pipe, pipe.upstream, pipe.to_upstream):
            return
        if pipe.client_eof and not pipe.to_upstream and not pipe.upstream_shut:
            pipe.upstream_shut = self._shutdown_write(pipe, pipe.upstream)
        if pipe.closed or not self._send(pipe, pipe.client, pipe.to_client):
            return
        if pipe.upstream_eof and not pipe.to_client and not pipe.client_shut:
            pipe.client_shut = self._shutdown_write(pipe, pipe.client)
        if pipe.upstream_shut and pipe.client_shut:
            self._close_pipe(pipe, abrupt=False)

    def _send(self, pipe: _Pipe, sock: socket.socket, buffer: bytearray) -> bool:
        while buffer:
            try:
                sent = sock.send(buffer)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._close_pipe(pipe, abrupt=True)
                return False
            del buffer[:sent]
        return True

    def _shutdown_write(self, pipe: _Pipe, sock: socket.socket) -> bool:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close_pipe(pipe, abrupt=True)
            return False
        return True

    def _update_interest(self, pipe: _Pipe) -> None:
        forwarding = self._mode is _Mode.FORWARD
        dropping = self._mode is _Mode.BLACKHOLE
        wanted = 0
        if not pipe.client_eof and (dropping or len(pipe.to_upstream) < _BUFFER_CAP_BYTES):
            wanted |= selectors.EVENT_READ
        if forwarding and pipe.to_client:
            wanted |= selectors.EVENT_WRITE
        pipe.client_events = self._set_interest(pipe.client, pipe.client_events, wanted, (pipe, _Side.CLIENT))
        if pipe.upstream is None:
            return
        wanted = 0
        if pipe.connecting:
            wanted = selectors.EVENT_WRITE
        else:
            if not pipe.upstream_eof and (dropping or len(pipe.to_client) < _BUFFER_CAP_BYTES):
                wanted |= selectors.EVENT_READ
            if forwarding and pipe.to_upstream:
                wanted |= selectors.EVENT_WRITE
        pipe.upstream_events = self._set_interest(
            pipe.upstream, pipe.upstream_events, wanted, (pipe, _Side.UPSTREAM)
        )

    def _set_interest(self, sock: socket.socket, current: int, wanted: int, data: object) -> int:
        if wanted == current:
            return current
        if current == 0:
            self._sel.register(sock, wanted, data)
        elif wanted == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, wanted, data)
        return wanted

    def _close_pipe(self, pipe: _Pipe, *, abrupt: bool) -> None:
        if pipe.closed:
            return
        pipe.closed = True
        self._pipes.discard(pipe)
        for sock, events in ((pipe.client, pipe.client_events), (pipe.upstream, pipe.upstream_events)):
            if sock is None:
                continue
            if events:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
            if abrupt:
                # Linger on with a zero timeout makes close() send RST instead of FIN.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        pipe.client_events = pipe.upstream_events = 0
