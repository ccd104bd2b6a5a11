"""The asyncio client (zmq.asyncio): the same protocol and behaviour as Client, for code
that runs in an event loop.

One reader task receives every response and routes it by request id to the queue of the
request it belongs to, so any number of generations and calls may run concurrently on one
AsyncClient (from any number of tasks of its loop); replies for abandoned requests are
dropped. The reader also pings the live streaming requests every `ping_interval` seconds
and watches the socket monitor, failing every waiting request with BitrackUnavailable
when the connection drops. Timeouts raise BitrackTimeout, a TimeoutError.

    async with AsyncClient("127.0.0.1:5555") as c:
        async for ev in c.generate(prompt="Hello", max_tokens=16):
            ...
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any, AsyncIterator, Dict, List, Optional, Set

import zmq
import zmq.asyncio
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


class AsyncClient:
    """A connection to a bitrack server for asyncio code; arguments as for Client.
    Create it inside the running loop (or first await it in one)."""

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        timeout: Optional[float] = 30.0,
        ping_interval: Optional[float] = 1.0,
        context: Optional[zmq.asyncio.Context] = None,
        curve_server_key: Any = None,
        curve_key: Any = None,
        connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.addr = normalize_addr(addr)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self._own_ctx = context is None
        self._ctx = context or zmq.asyncio.Context()
        self._sock: Optional[zmq.asyncio.Socket] = self._ctx.socket(zmq.DEALER)
        try:
            curve = setup_socket(self._sock, curve_server_key, curve_key)
        except BaseException:
            self._sock.close(0)
            if self._own_ctx:
                self._ctx.term()
            raise
        self._mon = self._sock.get_monitor_socket(HANDSHAKE_EVENTS)
        self._watch = ConnectionWatch(curve)
        self._sock.connect(self.addr)
        self._prefix = "pa%x-" % (os.getpid() & 0xFFFFFF)
        self._seq = itertools.count(1)
        self._queues: Dict[str, "asyncio.Queue[Message]"] = {}
        self._streaming: Dict[str, bool] = {}
        self._abandoned: Set[str] = set()  # as in Client: ids that may still run
        self._reader: Optional["asyncio.Task[None]"] = None
        self._failure: Optional[BitrackError] = None

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        if self._sock is not None:
            self._sock.disable_monitor()
            self._mon.close(0)
            self._sock.close(0)
            self._sock = None
            if self._own_ctx:
                self._ctx.term()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> bool:
        await self.close()
        return False

    # -- plumbing ----------------------------------------------------------------------

    def _new_id(self) -> str:
        return "%s%d" % (self._prefix, next(self._seq))

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            raise ValueError("the client is closed")
        return self._sock

    async def _read_monitor(self) -> None:
        while await self._mon.poll(0):
            self._watch.event(await zmq.utils.monitor.recv_monitor_message(self._mon))

    async def _send(self, msg: Message, follow_up: bool = False) -> None:
        """As Client._send: waits for a connection within the connect timeout."""
        sock = self._socket()
        data = encode(msg)
        limits = [t for t in (self.connect_timeout, self.timeout) if t is not None]
        wait = min(limits) if limits else None
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            try:
                await sock.send(data, zmq.NOBLOCK)
                self._watch.sent(follow_up)
                return
            except zmq.Again:
                pass
            await self._read_monitor()
            self._watch.check(self.addr, follow_up, msg.get("id"))
            if deadline is not None and loop.time() >= deadline:
                raise BitrackUnavailable(
                    "unavailable",
                    "no server reachable at %s within %.3g s" % (self.addr, wait),
                    msg.get("id"),
                )
            await asyncio.sleep(0.01)

    async def _try_send(self, msg: Message) -> None:
        try:
            await self._send(msg, follow_up=True)
        except Exception:
            pass

    def _fail_all(self, err: BitrackError) -> None:
        for q in self._queues.values():
            q.put_nowait({"type": "_failure", "error": err})

    async def _read(self) -> None:
        """The reader task: routes responses, pings live streams, watches the monitor."""
        sock = self._socket()
        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + (self.ping_interval or 0)
        while True:
            wait_ms = 100
            if self.ping_interval:
                now = loop.time()
                if next_ping <= now:
                    for rid in [r for r, s in self._streaming.items() if s]:
                        await self._try_send({"type": "ping", "id": rid})
                    next_ping = now + self.ping_interval
                wait_ms = max(1, min(wait_ms, int((next_ping - now) * 1000) + 1))
            ready = dict(await poller.poll(wait_ms))
            if self._mon in ready:
                await self._read_monitor()
                if self._watch.drops:
                    self._abandoned.clear()  # the server that ran them is gone
                if self._watch.drops and self._queues:
                    self._fail_all(
                        BitrackUnavailable(
                            "unavailable", "the connection to %s was lost" % self.addr
                        )
                    )
                    self._watch.drops = 0
            if sock not in ready:
                continue
            try:
                msg = decode((await sock.recv_multipart(zmq.NOBLOCK))[0], self.addr)
            except zmq.Again:
                continue  # readable by the poll, gone by the read (a dropped connection's)
            except BitrackError as e:
                self._fail_all(e)
                continue
            mid = msg.get("id")
            if msg["type"] in ("done", "error") and mid not in self._queues:
                self._abandoned.discard(mid)  # an abandoned request has ended
            if mid is None and msg["type"] == "error" and len(self._queues) == 1:
                mid = next(iter(self._queues))  # id-less error: the one request in flight
            q = self._queues.get(mid) if isinstance(mid, str) else None
            if q is not None and (msg["type"] != "pong" or not self._streaming.get(mid)):
                q.put_nowait(msg)

    async def _start(self, msg: Message, streaming: bool) -> str:
        rid = msg["id"]
        if rid in self._queues or rid in self._abandoned:
            raise duplicate_id(rid, rid in self._queues)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())
        if not self._queues:
            await self._read_monitor()
            self._watch.drops = 0
        self._queues[rid] = asyncio.Queue()
        self._streaming[rid] = streaming
        try:
            await self._send(msg)
        except BaseException:
            self._finish(rid)
            raise
        return rid

    def _finish(self, rid: str) -> None:
        self._queues.pop(rid, None)
        self._streaming.pop(rid, None)

    async def _next(self, rid: str) -> Message:
        try:
            if self.timeout is None:
                msg = await self._queues[rid].get()
            else:
                msg = await asyncio.wait_for(self._queues[rid].get(), self.timeout)
        except asyncio.TimeoutError:
            raise BitrackTimeout(
                "no reply from %s for %.3g s" % (self.addr, self.timeout), rid
            ) from None
        if msg["type"] == "_failure":
            err = msg["error"]
            err.request_id = rid
            raise err
        return msg

    async def _call(self, msg: Message, want: str) -> Message:
        rid = await self._start(dict(msg, id=msg.get("id") or self._new_id()), streaming=False)
        try:
            while True:
                resp = await self._next(rid)
                if call_result(resp, rid, want) is not None:
                    return resp
        finally:
            self._finish(rid)

    # -- API ---------------------------------------------------------------------------

    async def generate(
        self,
        prompt: Optional[str] = None,
        tokens: Optional[List[int]] = None,
        messages: Optional[List[Dict[str, str]]] = None,
        max_tokens: Optional[int] = None,
        stream: bool = True,
        id: Optional[str] = None,
        **options: Any,
    ) -> AsyncIterator[Message]:
        """As Client.generate, awaited: sends the request and returns an async iterator
        over its events. Leaving the iteration early (or its task being cancelled)
        cancels the request."""
        msg = generate_message(
            id or self._new_id(), prompt, tokens, messages, max_tokens, stream, options
        )
        rid = await self._start(msg, streaming=True)
        return self._stream(rid)

    async def _stream(self, rid: str) -> AsyncIterator[Message]:
        finished = False
        try:
            while True:
                resp = await self._next(rid)
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
            await self._try_send({"type": "cancel", "id": rid})
            raise
        finally:
            self._finish(rid)
            if not finished and self._sock is not None:
                self._abandoned.add(rid)
                await self._try_send({"type": "cancel", "id": rid})

    async def complete(self, prompt: Optional[str] = None, **kw: Any) -> Message:
        """Non-streaming convenience: returns the `done` event (with its `text`)."""
        kw["stream"] = False
        done: Message = {}
        async for ev in await self.generate(prompt=prompt, **kw):
            done = ev
        return done

    async def cancel(self, id: str) -> None:
        await self._send({"type": "cancel", "id": id})

    async def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        resp = await self._call({"type": "tokenize", "text": text, "add_bos": add_bos}, "tokenize")
        return list(resp["tokens"])

    async def detokenize(self, tokens: List[int]) -> str:
        resp = await self._call({"type": "detokenize", "tokens": list(tokens)}, "detokenize")
        return str(resp["text"])

    async def health(self) -> str:
        return str((await self._call({"type": "health"}, "health"))["state"])

    async def info(self) -> Dict[str, Any]:
        return dict((await self._call({"type": "info"}, "info"))["info"])

    async def metrics(self) -> Dict[str, Any]:
        return dict((await self._call({"type": "metrics"}, "metrics"))["metrics"])

    async def ping(self) -> None:
        await self._call({"type": "ping"}, "pong")
