"""Python client for the bitrack serving protocol, version 1 (proto/PROTOCOL.md).

    from bitrack_client import Client
    with Client("127.0.0.1:5555") as c:
        for ev in c.generate(prompt="Ternary weights are", max_tokens=32):
            print(ev.get("text", ""), end="")

Client is synchronous (one thread); AsyncClient (bitrack_client.aio) is its asyncio
twin. Both run any number of requests at once on one connection, routing each response
by its request id. Errors are BitrackError subclasses that also derive from the matching
built-in exception: BitrackTimeout is a TimeoutError, BitrackUnavailable a
ConnectionError, BitrackBadRequest and BitrackTooLong are ValueErrors. Needs pyzmq and
msgpack (Debian: python3-zmq, python3-msgpack).
"""

from ._common import (
    DEFAULT_ADDR,
    DEFAULT_CONNECT_TIMEOUT,
    GENERATE_OPTIONS,
    PROTOCOL_VERSION,
    BitrackBadRequest,
    BitrackBusy,
    BitrackCancelled,
    BitrackDuplicateId,
    BitrackError,
    BitrackProtocolError,
    BitrackTimeout,
    BitrackTooLong,
    BitrackUnavailable,
    load_key,
)
from .aio import AsyncClient
from .client import Client

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BitrackBadRequest",
    "BitrackBusy",
    "BitrackCancelled",
    "BitrackDuplicateId",
    "BitrackError",
    "BitrackProtocolError",
    "BitrackTimeout",
    "BitrackTooLong",
    "BitrackUnavailable",
    "Client",
    "DEFAULT_ADDR",
    "DEFAULT_CONNECT_TIMEOUT",
    "GENERATE_OPTIONS",
    "PROTOCOL_VERSION",
    "__version__",
    "load_key",
]
