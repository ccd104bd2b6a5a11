"""What the synchronous and the asyncio client share: protocol constants, the exception
classes, key files, message encoding, and the reading of the socket monitor's events."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Set, Union

import msgpack
import zmq
import zmq.utils.z85

PROTOCOL_VERSION = 1
DEFAULT_ADDR = "tcp://127.0.0.1:5555"
DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds without a connection before a call fails

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
        "top_logprobs",
        "add_bos",
        "chat_template",
    ]
)

Message = Dict[str, Any]


class BitrackError(Exception):
    """An `error` response or a failure to reach the server. `code` is the protocol's
    error code (bad_request, too_long, busy, cancelled, unavailable, internal,
    duplicate_id), "timeout",
    or "protocol" for a response this client cannot read. Each code has a subclass that
    also derives from the matching built-in exception, so callers may catch either."""

    def __init__(self, code: str, message: str, request_id: Optional[str] = None) -> None:
        Exception.__init__(self, "%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message)


class BitrackTimeout(BitrackError, TimeoutError):
    """Nothing about the request arrived within the client's timeout."""

    def __init__(self, message: str, request_id: Optional[str] = None) -> None:
        BitrackError.__init__(self, "timeout", message, request_id)


class BitrackUnavailable(BitrackError, ConnectionError):
    """No server within the connect timeout, a refused handshake, a lost connection, or
    the server's `unavailable` (a rank was lost)."""


class BitrackBadRequest(BitrackError, ValueError):
    """The server refused the request's content (`bad_request`)."""


class BitrackTooLong(BitrackBadRequest):
    """The prompt leaves no room in the context (`too_long`); a max_tokens beyond the
    room left is not an error: the server lowers it (PROTOCOL.md)."""


class BitrackDuplicateId(BitrackError, ValueError):
    """A generate with the id of a request that may still run on the server (an earlier
    call with it was abandoned): `duplicate_id`, from the server or from this client,
    which never sends such an id again while it waits for that request's end."""


class BitrackBusy(BitrackError, RuntimeError):
    """The server's queue is full (`busy`); retry later."""


class BitrackCancelled(BitrackError):
    """The request was cancelled by the server (`cancelled`)."""


class BitrackProtocolError(BitrackError, RuntimeError):
    """A response this client cannot read, or the server's `internal` error."""


_BY_CODE = {
    "unavailable": BitrackUnavailable,
    "bad_request": BitrackBadRequest,
    "too_long": BitrackTooLong,
    "busy": BitrackBusy,
    "duplicate_id": BitrackDuplicateId,
    "cancelled": BitrackCancelled,
    "protocol": BitrackProtocolError,
    "internal": BitrackProtocolError,
}


def error_for(code: Any, message: Any, request_id: Optional[str] = None) -> BitrackError:
    """The exception for an error code (an unknown code gives BitrackError)."""
    code_s = code if isinstance(code, str) else str(code)
    cls = _BY_CODE.get(code_s, BitrackError)
    return cls(code_s, message if isinstance(message, str) else str(message), request_id)


_KEY_KINDS = {"public": "bitrack CurveZMQ public key", "secret": "bitrack CurveZMQ secret key"}


def load_key(key: Union[str, bytes, "os.PathLike[str]"], kind: Optional[str] = None) -> bytes:
    """A z85 CurveZMQ key (40 characters) as bytes: `key` itself when it is one, else the
    key in the file `key`, as `bitrack keygen` writes it: '#' comment lines, one of them
    stating the kind ('# bitrack CurveZMQ public key' or '... secret key'), and one line
    of 40 z85 characters. kind ("public" or "secret"): a file that states another kind,
    or none, raises ValueError naming it (the file name plays no part)."""
    if isinstance(key, bytes):
        key = key.decode("ascii")
    key = os.fspath(key)
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


def normalize_addr(addr: str) -> str:
    """"host:port" means "tcp://host:port" (as in the command line); endpoints with a
    transport pass through."""
    if "://" in addr:
        return addr
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("address %r: give host:port or tcp://host:port" % addr)
    return "tcp://" + addr


HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
)
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)


class ConnectionWatch:
    """What the monitor's events say: why the last handshake failed (refusal) and how
    many connections dropped since the current call began (drops)."""

    def __init__(self, curve: bool) -> None:
        self.curve = curve
        self.refusal: Optional[str] = None
        self.broken = 0
        self.drops = 0

    def event(self, ev: Mapping[str, Any]) -> None:
        e = ev["event"]
        if e == zmq.EVENT_DISCONNECTED:
            self.drops += 1
        elif e == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.refusal = "the server refused this client's CurveZMQ key (not authorized)"
        elif e == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and ev["value"] == _MECHANISM_MISMATCH:
            self.refusal = (
                "the server does not use CurveZMQ"
                if self.curve
                else "the server requires CurveZMQ (give curve_server_key and curve_key)"
            )
        elif e == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.broken < 2:
            self.broken += 1  # lost mid-handshake once or twice (a restart?): no refusal yet
        elif self.curve:
            self.refusal = "the CurveZMQ handshake failed (is the server key the server's?)"
        else:
            self.refusal = "the handshake failed (does the server require CurveZMQ?)"

    def sent(self, follow_up: bool) -> None:
        self.refusal = None
        self.broken = 0
        if not follow_up:
            self.drops = 0

    def check(self, addr: str, follow_up: bool, rid: Optional[str]) -> None:
        """While a send waits for a connection: raises BitrackUnavailable when the
        connection a follow-up message is about was lost, or a handshake was refused."""
        if follow_up and self.drops:
            raise BitrackUnavailable("unavailable", "the connection to %s was lost" % addr, rid)
        if self.refusal:
            raise BitrackUnavailable(
                "unavailable", "cannot connect to %s: %s" % (addr, self.refusal), rid
            )


def duplicate_id(rid: str, running: bool) -> BitrackDuplicateId:
    """A request id the server may still be running: not sent again until its end."""
    return BitrackDuplicateId(
        "duplicate_id",
        "id %r is still in flight on the server (%s); use another id"
        % (rid, "a call with it is running" if running
           else "an earlier call with it was abandoned"),
        rid,
    )


def stream_event(resp: Message, rid: str, abandoned: Set[str]) -> Optional[bool]:
    """One response of a generate stream: None to skip it, False for a token to pass on,
    True for the final done; an error raises (a duplicate_id error leaves rid abandoned:
    the original request still runs)."""
    t = resp["type"]
    if t == "error":
        if resp.get("code") == "duplicate_id":
            abandoned.add(rid)
        raise error_for(resp.get("code"), resp.get("message", ""), rid)
    return True if t == "done" else False if t == "token" else None


def call_result(resp: Message, rid: str, want: str) -> Optional[Message]:
    """One response of a call: the wanted reply, None to keep waiting; an error raises."""
    if resp["type"] == "error":
        raise error_for(resp.get("code"), resp.get("message", ""), rid)
    return resp if resp["type"] == want else None


def setup_socket(sock: zmq.Socket, curve_server_key: Any, curve_key: Any) -> bool:
    """LINGER 0 and IMMEDIATE (a send waits for a connection instead of queueing for a
    server that may never come), and the CurveZMQ keys when given. Returns whether
    CurveZMQ is on."""
    if (curve_server_key is None) != (curve_key is None):
        raise ValueError("curve_server_key and curve_key go together")
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    if curve_key is None:
        return False
    if not zmq.has("curve"):
        raise BitrackError("unsupported", "this libzmq has no CurveZMQ")
    secret = load_key(curve_key, "secret")
    sock.curve_serverkey = load_key(curve_server_key, "public")
    sock.curve_secretkey = secret
    sock.curve_publickey = zmq.curve_public(secret)
    return True


def encode(msg: Mapping[str, Any]) -> bytes:
    m = dict(msg)
    m.setdefault("v", PROTOCOL_VERSION)
    return msgpack.packb(m, use_bin_type=True)


def decode(frame: bytes, addr: str) -> Message:
    """One response; BitrackProtocolError when it is not a protocol-v1 typed map."""
    try:
        msg = msgpack.unpackb(frame, raw=False)
    except Exception as e:  # any decoding failure is the server's protocol error
        raise BitrackProtocolError("protocol", "bad response from %s: %s" % (addr, e))
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise BitrackProtocolError("protocol", "bad response from %s: not a typed map" % addr)
    if msg.get("v") != PROTOCOL_VERSION:
        raise BitrackProtocolError("protocol", "unsupported protocol version %r" % msg.get("v"))
    return msg


def generate_message(
    rid: str,
    prompt: Optional[str],
    tokens: Optional[Any],
    messages: Optional[Any],
    max_tokens: Optional[int],
    stream: bool,
    options: Mapping[str, Any],
) -> Message:
    """The generate request; ValueError/TypeError for arguments no server would take."""
    given = [x for x in (prompt, tokens, messages) if x is not None]
    if len(given) != 1:
        raise ValueError("exactly one of prompt, tokens, messages is required")
    unknown = set(options) - GENERATE_OPTIONS
    if unknown:
        raise TypeError("unknown generate options: %s" % ", ".join(sorted(unknown)))
    msg: Message = {"type": "generate", "id": rid, "stream": bool(stream)}
    if prompt is not None:
        msg["prompt"] = prompt
    elif tokens is not None:
        msg["tokens"] = list(tokens)
    else:
        msg["messages"] = list(messages)  # type: ignore[arg-type]
    if max_tokens is not None:
        msg["max_tokens"] = max_tokens
    msg.update(options)
    return msg
