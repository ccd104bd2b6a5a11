"""Python client for the bitrack serving protocol, version 1 (see proto/PROTOCOL.md).

One DEALER socket per Client; a Client is meant for one thread. Requests are msgpack maps
in single frames; responses are matched to requests by id, so replies to requests this
client abandoned (after a timeout, or a generator closed early) are skipped. While waiting
the client sends `ping` every `ping_interval` seconds so the server keeps its streaming
requests alive, and it raises BitrackTimeout when nothing about the request arrived for
`timeout` seconds (after sending `cancel` for a generate). When the connection to the
server drops while a request is waiting (the server process died), the request fails at
once with BitrackError code `unavailable`; the socket reconnects by itself, so a retry
is served once a server is back.

Needs pyzmq and msgpack (Debian: python3-zmq, python3-msgpack); the rest is stdlib.
"""

import itertools
import os
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
DEFAULT_ADDR = "tcp://127.0.0.1:5555"

# Sampling and generation options a generate request may carry (PROTOCOL.md).
GENERATE_OPTIONS = frozenset(
    [
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "repeat_penalty",
        "repeat_last_n",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "stop",
        "stop_tokens",
        "logit_bias",
        "logprobs",
        "add_bos",
        "chat_template",
    ]
)


class BitrackError(Exception):
    """An `error` response (code: bad_request, too_long, busy, cancelled, unavailable,
    internal) or a protocol problem (code "protocol")."""

    def __init__(self, code, message, request_id=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.request_id = request_id


class BitrackTimeout(BitrackError):
    """Nothing about the request arrived within the client's timeout."""

    def __init__(self, message, request_id=None):
        super().__init__("timeout", message, request_id)


class Client:
    """A connection to a bitrack server.

    addr: ZeroMQ endpoint of the server's ROUTER socket.
    timeout: seconds to wait for the next message about a request (None: forever).
    ping_interval: seconds between pings while waiting (None or 0: no pings).
    """

    def __init__(self, addr=DEFAULT_ADDR, timeout=30.0, ping_interval=1.0, context=None):
        self.addr = addr
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        if timeout is not None:
            self._sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        # connection drops, to fail a waiting request at once rather than after `timeout`
        self._mon = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._sock.connect(addr)
        self._prefix = "py%x-" % (os.getpid() & 0xFFFFFF)
        self._seq = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self):
        if self._sock is not None:
            self._sock.disable_monitor()
            self._mon.close(0)
            self._sock.close(0)
            self._sock = None
            if self._own_ctx:
                self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- plumbing ----------------------------------------------------------------------

    def _new_id(self):
        return "%s%d" % (self._prefix, next(self._seq))

    def _forget_drops(self):
        """Connection drops from before a new request (a server that went away earlier)
        do not concern it."""
        while self._mon.poll(0):
            self._mon.recv_multipart()

    def _send(self, msg):
        msg = dict(msg)
        msg.setdefault("v", PROTOCOL_VERSION)
        try:
            self._sock.send(msgpack.packb(msg, use_bin_type=True))
        except zmq.Again:
            raise BitrackError(
                "unavailable", "no server reachable at %s" % self.addr, msg.get("id")
            ) from None

    def _recv_one(self):
        """Decodes one waiting message; returns a dict, or raises BitrackError."""
        frames = self._sock.recv_multipart(zmq.NOBLOCK)
        try:
            msg = msgpack.unpackb(frames[0], raw=False)
        except Exception as e:  # any decoding failure is the server's protocol error
            raise BitrackError("protocol", "bad response from %s: %s" % (self.addr, e))
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise BitrackError("protocol", "bad response from %s: not a typed map" % self.addr)
        if msg.get("v") != PROTOCOL_VERSION:
            raise BitrackError("protocol", "unsupported protocol version %r" % msg.get("v"))
        return msg

    def _responses(self, rid, generate, want_pong=False):
        """Yields the responses carrying id rid (pongs excluded), pinging while waiting,
        until the caller stops; raises BitrackTimeout after `timeout` seconds of silence."""
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)
        last = time.monotonic()
        next_ping = last + (self.ping_interval or 0)
        while True:
            now = time.monotonic()
            wait = None
            if self.timeout is not None:
                wait = last + self.timeout - now
                if wait <= 0:
                    if generate:
                        self._try_send({"type": "cancel", "id": rid})
                    raise BitrackTimeout(
                        "no reply from %s for %.3g s" % (self.addr, self.timeout), rid
                    )
            if self.ping_interval and not want_pong:
                if next_ping <= now:
                    self._try_send({"type": "ping", "id": rid})
                    next_ping = now + self.ping_interval
                wait = next_ping - now if wait is None else min(wait, next_ping - now)
            ready = dict(poller.poll(None if wait is None else max(0, int(wait * 1000)) + 1))
            if self._mon in ready:
                self._mon.recv_multipart()
                raise BitrackError(
                    "unavailable", "the connection to %s was lost" % self.addr, rid
                )
            if self._sock not in ready:
                continue
            msg = self._recv_one()
            mid = msg.get("id")
            if mid is None and msg["type"] == "error":
                mid = rid  # the server could not read our message's id: it is this call's
            if mid != rid or (msg["type"] == "pong" and not want_pong):
                continue  # an abandoned request's reply, or a heartbeat answer
            last = time.monotonic()
            yield msg

    def _try_send(self, msg):
        try:
            self._send(msg)
        except BitrackError:
            pass

    def _call(self, msg, want):
        rid = msg.setdefault("id", self._new_id())
        self._forget_drops()
        self._send(msg)
        for resp in self._responses(rid, generate=False, want_pong=want == "pong"):
            if resp["type"] == "error":
                raise BitrackError(resp.get("code"), resp.get("message", ""), rid)
            if resp["type"] == want:
                return resp

    # -- API ---------------------------------------------------------------------------

    def generate(
        self,
        prompt=None,
        tokens=None,
        messages=None,
        max_tokens=None,
        stream=True,
        id=None,
        **options
    ):
        """Starts a generation and yields its events as dicts: `token` events (stream=True)
        then one `done`. An `error` response raises BitrackError. Closing the generator
        early cancels the request. Exactly one of prompt, tokens, messages is required;
        options are the sampling fields of PROTOCOL.md (temperature=..., stop=[...]).
        A token event with token == -1 carries only text (bytes held back until they formed
        complete UTF-8 characters); joining every event's "text" gives the completion."""
        given = [x for x in (prompt, tokens, messages) if x is not None]
        if len(given) != 1:
            raise ValueError("exactly one of prompt, tokens, messages is required")
        unknown = set(options) - GENERATE_OPTIONS
        if unknown:
            raise TypeError("unknown generate options: %s" % ", ".join(sorted(unknown)))
        rid = id or self._new_id()
        msg = {"type": "generate", "id": rid, "stream": bool(stream)}
        if prompt is not None:
            msg["prompt"] = prompt
        elif tokens is not None:
            msg["tokens"] = list(tokens)
        else:
            msg["messages"] = list(messages)
        if max_tokens is not None:
            msg["max_tokens"] = max_tokens
        msg.update(options)
        self._forget_drops()
        self._send(msg)  # sent now, not at the first next(), so the request id is live
        return self._stream(rid)

    def _stream(self, rid):
        finished = False
        try:
            for resp in self._responses(rid, generate=True):
                t = resp["type"]
                if t == "token":
                    yield resp
                elif t == "done":
                    finished = True
                    yield resp
                    return
                elif t == "error":
                    finished = True
                    raise BitrackError(resp.get("code"), resp.get("message", ""), rid)
        except BitrackTimeout:
            finished = True
            raise
        finally:
            if not finished and self._sock is not None:
                self._try_send({"type": "cancel", "id": rid})

    def complete(self, prompt=None, **kw):
        """Non-streaming convenience: returns the `done` event (with its `text`)."""
        kw["stream"] = False
        done = None
        for ev in self.generate(prompt=prompt, **kw):
            done = ev
        return done

    def cancel(self, id):
        """Asks the server to stop the generate request `id` (fire and forget)."""
        self._send({"type": "cancel", "id": id})

    def tokenize(self, text, add_bos=True):
        return self._call({"type": "tokenize", "text": text, "add_bos": add_bos}, "tokenize")[
            "tokens"
        ]

    def detokenize(self, tokens):
        return self._call({"type": "detokenize", "tokens": list(tokens)}, "detokenize")["text"]

    def health(self):
        """Returns the server state: "loading", "ready" or "draining"."""
        return self._call({"type": "health"}, "health")["state"]

    def info(self):
        return self._call({"type": "info"}, "info")["info"]

    def metrics(self):
        return self._call({"type": "metrics"}, "metrics")["metrics"]

    def ping(self):
        self._call({"type": "ping"}, "pong")
