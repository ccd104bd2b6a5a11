"""The synchronous client: one DEALER socket, any number of requests in flight.

Responses carry their request's id, and every response read is routed to the request it
belongs to: a generator being iterated keeps the events of the others in their own
queues, so interleaved generators each get all of their events. Replies to requests this
client abandoned (a timeout, a generator closed early) are dropped. While it waits, the
client pings every live streaming request each `ping_interval` seconds so that the server
keeps them, and it raises BitrackTimeout (a TimeoutError) when nothing about the request
arrived for `timeout` seconds (after sending `cancel` for a generate). A call that finds
no connection within `connect_timeout` seconds, a refused handshake, or a connection that
drops while a request waits, raises BitrackUnavailable (a ConnectionError) naming the
address; the socket reconnects by itself, so a retry reaches a restarted server.

A Client is meant for one thread (ZeroMQ sockets are not thread-safe); use one client
per thread, or AsyncClient in asyncio code.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from typing import Any, Deque, Dict, Iterator, List, Optional, Set

import zmq
import zmq.utils.monitor

from ._common import (
    DEFAULT_ADDR,
    DEFAULT_CONNECT_TIMEOUT,
    HANDSHAKE_EVENTS,
    BitrackError,
    BitrackTimeout,
    BitrackUnavailable,
    ConnectionWatch,
    Message,
    call_result,
    decode,
    duplicate_id,
    encode,
    generate_message,
    normalize_addr,
    setup_socket,
    stream_event,
)


class Client:
    """A connection to a bitrack server.

    addr: the server's endpoint ("host:port" means tcp://host:port).
    timeout: seconds to wait for the next message about a request (None: forever).
    connect_timeout: seconds to wait for a connection before a call fails (None: as long
    as `timeout`).
    ping_interval: seconds between pings while waiting (None or 0: no pings).
    curve_server_key, curve_key: the server's CurveZMQ public key and this client's secret
    key (z85 or a key file), both or neither; a key file of the wrong kind is a ValueError.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        timeout: Optional[float] = 30.0,
        ping_interval: Optional[float] = 1.0,
        context: Optional[zmq.Context] = None,
        curve_server_key: Any = None,
        curve_key: Any = None,
        connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.addr = normalize_addr(addr)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock: Optional[zmq.Socket] = self._ctx.socket(zmq.DEALER)
        try:
            curve = setup_socket(self._sock, curve_server_key, curve_key)
        except BaseException:
            self._sock.close(0)
            if self._own_ctx:
                self._ctx.term()
            raise
        # failed handshakes are otherwise silent (the socket retries): watch them so a
        # refused client can say why; and connection drops, to fail a waiting request at
        # once rather than after `timeout`
        self._mon = self._sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._watch = ConnectionWatch(curve)
        self._sock.connect(self.addr)
        self._prefix = "py%x-" % (os.getpid() & 0xFFFFFF)
        self._seq = itertools.count(1)
        # live requests: undelivered responses, and when each last heard from the server
        self._queues: Dict[str, Deque[Message]] = {}
        self._last: Dict[str, float] = {}
        self._streaming: Set[str] = set()  # live generate requests (pinged while waiting)
        # generate ids this client gave up on before their done or error (a timeout, an
        # iterator closed early): the server may still run them, so they are not sent
        # again until their end arrives
        self._abandoned: Set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._mon.close(0)
            self._sock.close(0)
            self._sock = None
            if self._own_ctx:
                self._ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    # -- plumbing ----------------------------------------------------------------------

    def _new_id(self) -> str:
        return "%s%d" % (self._prefix, next(self._seq))

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            raise ValueError("the client is closed")
        return self._sock

    def _read_monitor(self) -> None:
        while self._mon.poll(0):
            self._watch.event(zmq.utils.monitor.recv_monitor_message(self._mon))

    def _send(self, msg: Message, follow_up: bool = False) -> None:
        """Sends once a handshake has succeeded (IMMEDIATE), within the connect timeout; a
        refused handshake ends the wait at once. follow_up: a message about a request
        already sent (ping, cancel), which fails at once when that request's connection
        was lost; a new request instead waits for a connection (a server restarting)."""
        sock = self._socket()
        data = encode(msg)
        limits = [t for t in (self.connect_timeout, self.timeout) if t is not None]
        wait = min(limits) if limits else None
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            left = 0.1 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise BitrackUnavailable(
                    "unavailable",
                    "no server reachable at %s within %.3g s" % (self.addr, wait),
                    msg.get("id"),
                )
            # a blocking send wakes as soon as the connection is up; slices of 100 ms
            # let the monitor be read in between
            sock.setsockopt(zmq.SNDTIMEO, max(1, int(min(left, 0.1) * 1000)))
            try:
                sock.send(data)
                self._watch.sent(follow_up)
                return
            except zmq.Again:
                pass
            self._read_monitor()
            self._watch.check(self.addr, follow_up, msg.get("id"))

    def _try_send(self, msg: Message) -> None:
        try:
            self._send(msg, follow_up=True)
        except Exception:
            pass

    def _start(self, msg: Message, streaming: bool) -> str:
        """Sends a new request and makes it live."""
        rid = msg["id"]
        if rid in self._queues or rid in self._abandoned:
            raise duplicate_id(rid, rid in self._queues)
        if not self._queues:  # drops from before, with nothing in flight, concern nobody
            self._read_monitor()
            self._watch.drops = 0
        self._send(msg)
        self._queues[rid] = collections.deque()
        self._last[rid] = time.monotonic()
        if streaming:
            self._streaming.add(rid)
        return rid

    def _finish(self, rid: str) -> None:
        self._queues.pop(rid, None)
        self._last.pop(rid, None)
        self._streaming.discard(rid)

    def _route(self, msg: Message, rid: str, want_pong: bool) -> bool:
        """Files one response; returns whether it is for `rid` (and wanted)."""
        mid = msg.get("id")
        if mid is None and msg["type"] == "error":
            mid = rid  # the server could not read a message's id: take it as this call's
        if msg["type"] == "pong" and not (want_pong and mid == rid):
            return False  # a heartbeat answer
        if mid != rid and msg["type"] in ("done", "error"):
            self._abandoned.discard(mid)  # an abandoned request has ended
        if mid == rid:
            return True
        q = self._queues.get(mid) if isinstance(mid, str) else None
        if q is not None:  # another live request's: kept for it
            q.append(msg)
            self._last[mid] = time.monotonic()
        return False  # else an abandoned request's reply

    def _next(self, rid: str, generate: bool, want_pong: bool = False) -> Message:
        """The next response about rid, pinging the live streams while waiting; raises
        BitrackTimeout after `timeout` seconds of silence about rid."""
        q = self._queues[rid]
        if q:
            return q.popleft()
        sock = self._socket()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)
        next_ping = time.monotonic() + (self.ping_interval or 0)
        while True:
            now = time.monotonic()
            wait: Optional[float] = None
            if self.timeout is not None:
                wait = self._last[rid] + self.timeout - now
                if wait <= 0:
                    if generate:
                        self._try_send({"type": "cancel", "id": rid})
                    raise BitrackTimeout(
                        "no reply from %s for %.3g s" % (self.addr, self.timeout), rid
                    )
            if self.ping_interval and not want_pong:
                if next_ping <= now:
                    for live in list(self._streaming | {rid}):
                        self._try_send({"type": "ping", "id": live})
                    next_ping = now + self.ping_interval
                wait = next_ping - now if wait is None else min(wait, next_ping - now)
            ready: Dict[Any, int] = {}
            if not self._watch.drops:
                ms = None if wait is None else max(0, int(wait * 1000)) + 1
                ready = dict(poller.poll(ms))
            if self._mon in ready:
                self._read_monitor()
            if self._watch.drops:
                self._abandoned.clear()  # the server that ran them is gone
                raise BitrackUnavailable(
                    "unavailable", "the connection to %s was lost" % self.addr, rid
                )
            if sock not in ready:
                continue
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                # readable by the poll, gone by the read: a message queued from a peer
                # whose connection then dropped is discarded with the pipe
                continue
            msg = decode(frames[0], self.addr)
            if self._route(msg, rid, want_pong):
                self._last[rid] = time.monotonic()
                return msg

    def _call(self, msg: Message, want: str) -> Message:
        rid = self._start(dict(msg, id=msg.get("id") or self._new_id()), streaming=False)
        try:
            while True:
                resp = self._next(rid, generate=False, want_pong=want == "pong")
                if call_result(resp, rid, want) is not None:
                    return resp
        finally:
            self._finish(rid)

    # -- API ---------------------------------------------------------------------------

    def generate(
        self,
        prompt: Optional[str] = None,
        tokens: Optional[List[int]] = None,
        messages: Optional[List[Dict[str, str]]] = None,
        max_tokens: Optional[int] = None,
        stream: bool = True,
        id: Optional[str] = None,
        **options: Any,
    ) -> Iterator[Message]:
        """Starts a generation and returns an iterator over its events (dicts): `token`
        events (stream=True) then one `done`. An `error` response raises the matching
        BitrackError subclass (BitrackTooLong when the prompt leaves no room in the
        context; a max_tokens beyond the room left is lowered by the server, PROTOCOL.md). Closing the iterator early cancels the request. Exactly one of prompt,
        tokens, messages is required; options are the sampling fields of PROTOCOL.md
        (temperature=..., stop=[...]); what is not given takes the protocol's default.
        A token event with token == -1 carries only text (bytes held back until they
        formed complete UTF-8 characters); joining every event's "text" gives the
        completion. The request is sent before this returns, and several generations
        may be iterated in any interleaving."""
        msg = generate_message(
            id or self._new_id(), prompt, tokens, messages, max_tokens, stream, options
        )
        rid = self._start(msg, streaming=True)  # sent now: the request id is live
        return self._stream(rid)

    def _stream(self, rid: str) -> Iterator[Message]:
        finished = False
        try:
            while True:
                resp = self._next(rid, generate=True)
                try:
                    last = stream_event(resp, rid, self._abandoned)
                except BitrackError:
                    finished = True
                    raise
                if last is not None:
                    finished = last
                    yield resp
                    if last:
                        return
        except BitrackTimeout:
            finished = True
            self._abandoned.add(rid)
            raise
        finally:
            self._finish(rid)
            if not finished and self._sock is not None:
                self._abandoned.add(rid)
                self._try_send({"type": "cancel", "id": rid})

    def complete(self, prompt: Optional[str] = None, **kw: Any) -> Message:
        """Non-streaming convenience: returns the `done` event (with its `text`)."""
        kw["stream"] = False
        done: Message = {}
        for ev in self.generate(prompt=prompt, **kw):
            done = ev
        return done

    def cancel(self, id: str) -> None:
        """Asks the server to stop the generate request `id` (fire and forget)."""
        self._send({"type": "cancel", "id": id})

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        resp = self._call({"type": "tokenize", "text": text, "add_bos": add_bos}, "tokenize")
        return list(resp["tokens"])

    def detokenize(self, tokens: List[int]) -> str:
        return str(self._call({"type": "detokenize", "tokens": list(tokens)}, "detokenize")["text"])

    def health(self) -> str:
        """Returns the server state: "loading", "ready" or "draining"."""
        return str(self._call({"type": "health"}, "health")["state"])

    def info(self) -> Dict[str, Any]:
        return dict(self._call({"type": "info"}, "info")["info"])

    def metrics(self) -> Dict[str, Any]:
        return dict(self._call({"type": "metrics"}, "metrics")["metrics"])

    def ping(self) -> None:
        self._call({"type": "ping"}, "pong")
