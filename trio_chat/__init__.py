"""trio_chat: asynchat's line- and message-based handler model, rebuilt on trio.

The public names live in private modules and are re-exported here.
"""

from __future__ import annotations

import contextlib

from ._buffer import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    Event,
    Signal,
    Terminator,
    TerminatorBuffer,
    TerminatorFound,
    find_prefix_at_end,
)
from ._chat import AsyncChat, async_chat
from ._client import connect_tcp
from ._exceptions import FrameTooLongError, IncompleteFrameError
from ._framed import Delimiter, FramedStream, HalfCloseableFramedStream
from ._producers import Producer, ProducerLike, simple_producer
from ._serve import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    HandlerFactory,
    serve_listeners,
    serve_tcp,
)
from ._version import __version__

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "END_OF_INPUT",
    "NEED_DATA",
    "AsyncChat",
    "Delimiter",
    "Event",
    "FrameTooLongError",
    "FramedStream",
    "HalfCloseableFramedStream",
    "HandlerFactory",
    "IncompleteFrameError",
    "Producer",
    "ProducerLike",
    "Signal",
    "Terminator",
    "TerminatorBuffer",
    "TerminatorFound",
    "__version__",
    "async_chat",
    "connect_tcp",
    "find_prefix_at_end",
    "serve_listeners",
    "serve_tcp",
    "simple_producer",
]

# Public objects report the public module, so docs and reprs don't point into private modules.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("trio_chat._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "trio_chat"
del _name, _obj
