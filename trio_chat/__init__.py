"""trio_chat: asynchat's line- and message-based handler model, rebuilt on trio.

The public names live in private modules and are re-exported here.
"""

from __future__ import annotations

import types

from ._async_chat import async_chat
from ._buffer import (
    DEFAULT_MAX_FRAME_SIZE,
    END_OF_INPUT,
    NEED_DATA,
    BufferEvent,
    Event,
    Signal,
    Terminator,
    TerminatorBuffer,
    TerminatorFound,
    find_prefix_at_end,
)
from ._chat import CONNECTION_LOST_TIMEOUT, AsyncChat
from ._client import connect_tcp
from ._exceptions import FrameTooLongError, IncompleteFrameError
from ._framed import Delimiter, FramedStream, HalfCloseableFramedStream
from ._producers import Producer, ProducerLike, simple_producer
from ._reuseport import open_tcp_listeners_reuseport
from ._serve import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_PEER_IPV6_PREFIX,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    HandlerFactory,
    StreamHandler,
    default_max_connections,
    serve_listeners,
    serve_tcp,
)
from ._version import __version__
from ._workers import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_WINDOW,
    DEFAULT_STOP_TIMEOUT,
    Worker,
    WorkerCrashError,
    run_workers,
)

__all__ = [
    "CONNECTION_LOST_TIMEOUT",
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_PEER_IPV6_PREFIX",
    "DEFAULT_RESTART_WINDOW",
    "DEFAULT_STOP_TIMEOUT",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "END_OF_INPUT",
    "NEED_DATA",
    "AsyncChat",
    "BufferEvent",
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
    "StreamHandler",
    "Terminator",
    "TerminatorBuffer",
    "TerminatorFound",
    "Worker",
    "WorkerCrashError",
    "__version__",
    "async_chat",
    "connect_tcp",
    "default_max_connections",
    "find_prefix_at_end",
    "open_tcp_listeners_reuseport",
    "run_workers",
    "serve_listeners",
    "serve_tcp",
    "simple_producer",
]

# Public classes and functions report the public module, so reprs, pickles and the docs name
# trio_chat.AsyncChat rather than trio_chat._chat.AsyncChat. trio does the same for itself with
# trio._util.fixup_module_metadata, which is private and rewrites only modules named "trio.*",
# so it cannot serve here. Aliases and constants have no module of their own to rewrite.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, (type, types.FunctionType)) and _obj.__module__.startswith("trio_chat._"):
        _obj.__module__ = "trio_chat"
del _name, _obj
