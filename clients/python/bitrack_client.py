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

For a server started with --curve-secret, pass curve_server_key (the server's public key)
and curve_key (this client's secret key): z85 strings, or paths of files written by
`bitrack keygen`. A server that refuses the handshake makes calls raise BitrackError
("unavailable") saying why, rather than waiting for the timeout.

Needs pyzmq and msgpack (Debian: python3-zmq, python3-msgpack); the rest is stdlib.
"""

import itertools
import os
import time

import msgpack
import zmq
import zmq.utils.monitor
import zmq.utils.z85

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
    internal, duplicate_id) or a protocol problem (code "protocol")."""

    def __init__(self, code, message, request_id=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.request_id = request_id


class BitrackTimeout(BitrackError):
    """Nothing about the request arrived within the client's timeout."""

    def __init__(self, message, request_id=None):
        super().__init__("timeout", message, request_id)


_KEY_KINDS = {"public": "bitrack CurveZMQ public key", "secret": "bitrack CurveZMQ secret key"}


def load_key(key, kind=None):
    """A z85 CurveZMQ key (40 characters) as bytes: `key` itself when it is one, else the
    key in the file `key`, as `bitrack keygen` writes it: '#' comment lines, one of them
    stating the kind ('# bitrack CurveZMQ public key' or '... secret key'), and one line
    of 40 z85 characters. kind ("public" or "secret"): a file that states another kind,
    or none, raises ValueError naming it (the file name plays no part)."""
    if isinstance(key, bytes):
        key = key.decode("ascii")
    if len(key) != 40 or os.path.exists(key):
        path = key
        with open(path, encoding="ascii") as f:
            lines = [l.strip() for l in f if l.strip()]
        keys = [l for l in lines if not l.startswith("#")]
        notes = [l[1:].strip() for l in lines if l.startswith("#")]
        stated = {k for k, text in _KEY_KINDS.items() for n in notes if n.startswith(text)}
        if not keys:
            raise ValueError("%s: no key" % path)
        if len(keys) > 1:
            raise ValueError("%s: more than one key line; a key file holds one key" % path)
        if len(stated) > 1:
            raise ValueError("%s: states both kinds (public and secret key)" % path)
        if kind is not None and not stated:
            raise ValueError(
                "%s: does not say whether it holds a public or a secret key (no '# %s' "
                "line); a %s key is needed here" % (path, _KEY_KINDS[kind], kind)
            )
        if kind is not None and stated != {kind}:
            raise ValueError(
                "%s: holds a %s key, but a %s key is needed here" % (path, stated.pop(), kind)
            )
        key = keys[0]
    if len(key) != 40:
        raise ValueError("not a 40-character z85 key: %.48r" % key)
    zmq.utils.z85.decode(key)  # raises on a character outside z85
    return key.encode("ascii")


_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class Client:
    """A connection to a bitrack server.

    addr: ZeroMQ endpoint of the server's ROUTER socket.
    timeout: seconds to wait for the next message about a request (None: forever).
    ping_interval: seconds between pings while waiting (None or 0: no pings).
    curve_server_key, curve_key: the server's CurveZMQ public key and this client's secret
    key (z85 or a key file), both or neither; a key file of the wrong kind is a ValueError.
    """

    def __init__(
        self,
        addr=DEFAULT_ADDR,
        timeout=30.0,
        ping_interval=1.0,
        context=None,
        curve_server_key=None,
        curve_key=None,
    ):
        if (curve_server_key is None) != (curve_key is None):
            raise ValueError("curve_server_key and curve_key go together")
        self.addr = addr
        self.timeout = timeout
        self.ping_interval = ping_interval
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._curve = curve_key is not None
        if self._curve:
            if not zmq.has("curve"):
                raise BitrackError("unsupported", "this libzmq has no CurveZMQ")
            secret = load_key(curve_key, "secret")
            self._sock.curve_serverkey = load_key(curve_server_key, "public")
            self._sock.curve_secretkey = secret
            self._sock.curve_publickey = zmq.curve_public(secret)
        # failed handshakes are otherwise silent (the socket retries): watch them so a
        # refused client can say why it cannot reach the server; and connection drops, to
        # fail a waiting request at once rather than after `timeout`
        self._mon = self._sock.get_monitor_socket(_HANDSHAKE_FAILED | zmq.EVENT_DISCONNECTED)
        self._refusal = None
        self._broken = 0
        self._drops = 0
        self._sock.connect(addr)
        self._prefix = "py%x-" % (os.getpid() & 0xFFFFFF)
        self._seq = itertools.count(1)
        # generate ids sent and not yet ended by a done or error (an abandoned call's
        # request may still run on the server): never sent again while here
        self._inflight = set()

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

    def _watch_handshakes(self):
        """Reads the monitor's events: remembers why a handshake failed, and counts
        connection drops in self._drops."""
        while self._mon.poll(0):
            ev = zmq.utils.monitor.recv_monitor_message(self._mon)
            if ev["event"] == zmq.EVENT_DISCONNECTED:
                self._drops += 1
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refusal = "the server refused this client's CurveZMQ key (not authorized)"
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and ev["value"] == getattr(
                zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002
            ):
                self._refusal = (
                    "the server does not use CurveZMQ"
                    if self._curve
                    else "the server requires CurveZMQ (give curve_server_key and curve_key)"
                )
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self._broken < 2:
                self._broken += 1  # lost mid-handshake once or twice (a restart?): no refusal yet
            elif self._curve:
                self._refusal = "the CurveZMQ handshake failed (is the server key the server's?)"
            else:
                self._refusal = "the handshake failed (does the server require CurveZMQ?)"

    def _forget_drops(self):
        """Connection drops from before a new request (a server that went away earlier)
        do not concern it."""
        self._watch_handshakes()
        self._drops = 0

    def _send(self, msg, follow_up=False):
        """Sends once a handshake has succeeded (IMMEDIATE), within `timeout`; a refused
        handshake ends the wait at once. follow_up: a message about a request already sent
        (ping, cancel), which fails at once when that request's connection was lost; a new
        request instead waits for a connection (a server restarting)."""
        msg = dict(msg)
        msg.setdefault("v", PROTOCOL_VERSION)
        data = msgpack.packb(msg, use_bin_type=True)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            left = 0.1 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise BitrackError(
                    "unavailable", "no server reachable at %s" % self.addr, msg.get("id")
                )
            # a blocking send wakes as soon as the connection is up; slices of 100 ms
            # let the monitor be read in between
            self._sock.setsockopt(zmq.SNDTIMEO, max(1, int(min(left, 0.1) * 1000)))
            try:
                self._sock.send(data)
                self._refusal = None
                self._broken = 0
                if not follow_up:
                    self._drops = 0
                return
            except zmq.Again:
                pass
            self._watch_handshakes()
            if follow_up and self._drops:  # do not wait out `timeout` for a lost server
                raise BitrackError(
                    "unavailable", "the connection to %s was lost" % self.addr, msg.get("id")
                )
            if self._refusal:
                raise BitrackError(
                    "unavailable",
                    "cannot connect to %s: %s" % (self.addr, self._refusal),
                    msg.get("id"),
                )

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
            ready = {}
            if not self._drops:
                ready = dict(poller.poll(None if wait is None else max(0, int(wait * 1000)) + 1))
            if self._mon in ready:
                self._watch_handshakes()
            if self._drops:
                self._inflight.clear()  # the server that ran them is gone
                raise BitrackError(
                    "unavailable", "the connection to %s was lost" % self.addr, rid
                )
            if self._sock not in ready:
                continue
            msg = self._recv_one()
            mid = msg.get("id")
            if mid is None and msg["type"] == "error":
                mid = rid  # the server could not read our message's id: it is this call's
            if mid != rid and msg["type"] in ("done", "error"):
                self._inflight.discard(mid)  # an abandoned request has ended
            if mid != rid or (msg["type"] == "pong" and not want_pong):
                continue  # an abandoned request's reply, or a heartbeat answer
            last = time.monotonic()
            yield msg

    def _try_send(self, msg):
        try:
            self._send(msg, follow_up=True)
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
        if rid in self._inflight:
            raise BitrackError(
                "duplicate_id",
                "id %r is still in flight on the server (an earlier call with it was "
                "abandoned); use another id" % rid,
                rid,
            )
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
        self._inflight.add(rid)
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
                    self._inflight.discard(rid)
                    yield resp
                    return
                elif t == "error":
                    finished = True
                    if resp.get("code") != "duplicate_id":  # else the original still runs
                        self._inflight.discard(rid)
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
