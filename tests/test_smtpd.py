"""CPython's ``smtpd`` running on :class:`async_chat`, checked against the original.

``smtpd.SMTPChannel`` (the stdlib's, 3.10 and 3.11 only) is rebuilt at run time on
``async_chat``: a new class whose namespace is the original's own ``__dict__`` and whose
base is ``async_chat``; its functions get new globals in which ``asynchat.async_chat`` (the name
its ``__init__`` and ``push`` call) is ``async_chat``. None of smtpd's code is copied.
It is served with :func:`trio_chat.serve_tcp`; the original runs on asyncore in a thread on
another loopback port. Both get the same clients, and must give the same replies byte for byte
and deliver the same messages:

* the command sequences CPython's ``Lib/test/test_smtpd.py`` checks through a mock socket,
  written here as our own table and sent over TCP (each reply checked, not only the last);
* ``smtplib`` (in threads): messages of 1 MiB and 20 MiB, 60 connections at once;
* pipelined commands (a whole session in one write);
* a message that makes a hook raise (the server's ``process_message``), pipelined and in
  lockstep: the replies before it are delivered, then the connection closes.

Not covered: ``SMTPServer`` and ``DebuggingServer`` (asyncore dispatchers; ``serve_tcp`` replaces
them), ``PureProxy``, the command line.
"""

from __future__ import annotations

import collections
import logging
import smtplib
import socket
import sys
import threading
import types
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio

import trio_chat
from trio_chat import async_chat

with warnings.catch_warnings():
    # "The smtpd module is deprecated ...": pyproject turns warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import asynchat
        import asyncore
        import smtpd
    except ImportError:
        version = sys.version.split()[0]
        pytest.skip(
            f"smtpd was removed in Python 3.12 (this is {version})", allow_module_level=True
        )

HOST = "127.0.0.1"
# Not in typeshed's stub of smtpd.
DATA_SIZE_DEFAULT: int = smtpd.DATA_SIZE_DEFAULT  # type: ignore[attr-defined]
VERSION: str = smtpd.__version__  # type: ignore[attr-defined]
TIMEOUT = 20  # seconds, for a whole test (the 20 MiB ones take about a second)
CRLF = b"\r\n"


# ------------------------------------------------------------------ smtpd, rebuilt on trio_chat


def rebuild(cls: type, base: type, module: types.ModuleType, **names: object) -> type:
    """*cls* with *base* as its only base: its own namespace, functions re-bound to a copy of
    *module*'s globals in which *names* are replaced."""
    new_globals = {**vars(module), **names}

    def rebind(value: object) -> object:
        if isinstance(value, types.FunctionType):
            # Zero-argument super() would still name the old class through its __class__ cell.
            assert "__class__" not in value.__code__.co_freevars, value
            function = types.FunctionType(
                value.__code__, new_globals, value.__name__, value.__defaults__, value.__closure__
            )
            function.__kwdefaults__ = value.__kwdefaults__
            function.__qualname__ = value.__qualname__
            function.__doc__ = value.__doc__
            function.__dict__.update(value.__dict__)
            return function
        if isinstance(value, property):
            return property(
                rebind(value.fget) if value.fget else None,  # type: ignore[arg-type]
                rebind(value.fset) if value.fset else None,  # type: ignore[arg-type]
                rebind(value.fdel) if value.fdel else None,  # type: ignore[arg-type]
                value.__doc__,
            )
        if isinstance(value, (staticmethod, classmethod)):
            return type(value)(rebind(value.__func__))  # type: ignore[arg-type]
        if isinstance(value, collections.defaultdict):
            # command_size_limits is class-level state that smtpd mutates: our own copy, so the
            # original server in its thread and the rebuilt one do not share it.
            return collections.defaultdict(value.default_factory, value)
        return value

    namespace = {
        name: rebind(value)
        for name, value in vars(cls).items()
        if name not in ("__dict__", "__weakref__")
    }
    return type(cls.__name__, (base,), namespace)


TrioSMTPChannel: Any = rebuild(
    smtpd.SMTPChannel,
    async_chat,
    smtpd,
    asynchat=types.SimpleNamespace(async_chat=async_chat),
)


def test_the_rebuilt_channel_is_smtpd_code_on_async_chat() -> None:
    assert TrioSMTPChannel.__mro__[1:3] == (async_chat, trio_chat.AsyncChat)
    for name in ("__init__", "found_terminator", "collect_incoming_data", "smtp_DATA", "push"):
        rebuilt, original = getattr(TrioSMTPChannel, name), getattr(smtpd.SMTPChannel, name)
        assert rebuilt.__code__ is original.__code__
        assert rebuilt.__globals__["asynchat"].async_chat is async_chat
    assert smtpd.SMTPChannel.__bases__ == (asynchat.async_chat,)  # the original untouched


# ------------------------------------------------------------------ the two servers


class HookError(Exception):
    """Raised by process_message for a message containing BOOM."""


BOOM = "boom"


@dataclass
class Settings:
    """One server configuration: SMTPServer's arguments, and channel attributes that CPython's
    tests set on a channel after creating it."""

    data_size_limit: int = DATA_SIZE_DEFAULT
    enable_SMTPUTF8: bool = False  # noqa: N815  (smtpd's name)
    decode_data: bool = False
    channel_attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class Mailbox:
    """What a channel calls back (``SMTPServer.process_message``), like CPython's DummyServer:
    records messages, answers ``250 Okish`` to a message of ``return status``. Also records the
    channels, to compare their state after a session."""

    settings: Settings = field(default_factory=Settings)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    channels: list[Any] = field(default_factory=list)

    def created(self, channel: Any) -> None:
        for name, value in self.settings.channel_attrs.items():
            setattr(channel, name, value)
        self.channels.append(channel)

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: bytes | str, **kwargs: Any
    ) -> str | None:
        self.messages.append((peer, mailfrom, rcpttos, data, kwargs))
        text = data.decode("latin-1") if isinstance(data, bytes) else data
        if BOOM in text:
            raise HookError(BOOM)
        if text == "return status":
            return "250 Okish"
        if "SMTPUTF8" in kwargs.get("mail_options", ()):
            return "250 SMTPUTF8 message okish"
        return None


class RecordedChannel(smtpd.SMTPChannel):
    """The original channel, registering itself with the test's mailbox."""

    def __init__(self, server: OriginalServer, *args: Any) -> None:
        super().__init__(server, *args)
        server.mailbox.created(self)


class OriginalServer(smtpd.SMTPServer):
    """The stdlib server, with the current test's settings and mailbox."""

    channel_class = RecordedChannel

    def __init__(self, asyncore_map: dict[int, Any]) -> None:
        self.mailbox = Mailbox()
        super().__init__((HOST, 0), None, map=asyncore_map)  # type: ignore[arg-type]

    def listen(self, num: int) -> None:
        # smtpd asks for a backlog of 5; 60 clients connecting at once would see their SYNs
        # dropped and retried a second later. The only change to the original server.
        super().listen(128)

    def handle_accepted(self, conn: Any, addr: Any) -> None:
        settings = self.mailbox.settings
        self.data_size_limit = settings.data_size_limit
        self.enable_SMTPUTF8 = settings.enable_SMTPUTF8
        self._decode_data = settings.decode_data
        super().handle_accepted(conn, addr)

    def process_message(self, *args: Any, **kwargs: Any) -> str | None:
        return self.mailbox.process_message(*args, **kwargs)


@dataclass
class Original:
    server: OriginalServer
    port: int


@pytest.fixture(scope="module")
def original_server() -> Iterator[Original]:
    """The asyncore server, looping in a thread for the whole module."""
    asyncore_map: dict[int, Any] = {}
    server = OriginalServer(asyncore_map)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            asyncore.loop(timeout=0.005, map=asyncore_map, count=1)

    thread = threading.Thread(target=loop, name="asyncore smtpd", daemon=True)
    thread.start()
    try:
        assert server.socket is not None
        yield Original(server, server.socket.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        asyncore.close_all(map=asyncore_map)


@dataclass
class Servers:
    """The original and the rebuilt server, each with its own mailbox, the same settings."""

    original: Original
    trio_port: int
    trio_mailbox: Mailbox

    @property
    def mailboxes(self) -> tuple[Mailbox, Mailbox]:
        return self.original.server.mailbox, self.trio_mailbox

    @property
    def ports(self) -> tuple[int, int]:
        return self.original.port, self.trio_port

    def configure(self, settings: Settings) -> None:
        for mailbox in self.mailboxes:
            mailbox.settings = settings


def trio_channel(mailbox: Mailbox, stream: trio.abc.Stream) -> trio_chat.AsyncChat:
    """serve_tcp's handler factory: what SMTPServer.handle_accepted does, on trio."""
    assert isinstance(stream, trio.SocketStream)
    settings = mailbox.settings
    channel: trio_chat.AsyncChat = TrioSMTPChannel(
        mailbox,
        stream.socket,
        stream.socket.getpeername(),
        settings.data_size_limit,
        None,
        settings.enable_SMTPUTF8,
        settings.decode_data,
    )
    mailbox.created(channel)
    return channel


@pytest.fixture
async def servers(original_server: Original, nursery: trio.Nursery) -> AsyncIterator[Servers]:
    original_server.server.mailbox = Mailbox()
    mailbox = Mailbox()
    listeners = await nursery.start(
        partial(
            trio_chat.serve_tcp,
            partial(trio_channel, mailbox),
            0,
            host=HOST,
            # asyncore has no per-peer limit, and all the clients here are on 127.0.0.1.
            max_connections_per_peer=None,
        )
    )
    yield Servers(original_server, listeners[0].socket.getsockname()[1], mailbox)


# ------------------------------------------------------------------ clients


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def pipelined(port: int, session: bytes) -> tuple[bytes, tuple[str, int]]:
    """Send a whole session in one write and end the input, read every reply until the server
    closes; returns the replies and the client's own address."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(session)
        await stream.send_eof()
        return await read_to_eof(stream), stream.socket.getsockname()


def replies(transcript: bytes) -> list[bytes]:
    """The replies in *transcript*, a multiline reply (``250-...``) as one, by its last line."""
    lines = transcript.split(CRLF)
    assert lines.pop() == b"", transcript  # every reply ends with CRLF
    return [line for line in lines if line[3:4] != b"-"]


def same_message(
    original: tuple[Any, ...], rebuilt: tuple[Any, ...], clients: tuple[Any, Any]
) -> None:
    """Messages delivered by the two servers are equal; each names its own client as the peer."""
    assert original[0] == clients[0]
    assert rebuilt[0] == clients[1]
    assert original[1:] == rebuilt[1:]


# ------------------------------------------------------------------ CPython's command sequences


@dataclass(frozen=True)
class Step:
    """A line sent (CRLF added) and the last line of the reply it must get: None for no reply
    (a line of message data), "*" for any, a trailing "..." for a prefix."""

    line: str
    reply: str | None = "*"

    @property
    def data(self) -> bytes:
        return self.line.encode("utf-8") + CRLF


def script(text: str) -> list[Step]:
    """Steps from lines ``command => reply`` (a line without ``=>`` gets no reply; blank lines
    are skipped, ``=> reply`` alone sends an empty line)."""
    steps = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line, arrow, reply = raw.strip().partition("=>")
        steps.append(Step(line.strip(), reply.strip() if arrow else None))
    return steps


FQDN = socket.getfqdn()  # what smtpd greets with
SUPPORTED = "Supported commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"
MAIL_SYNTAX = "501 Syntax: MAIL FROM: <address>"
RCPT_SYNTAX = "501 Syntax: RCPT TO: <address>"
EXTENDED = " [SP <mail-parameters>]"
MAIL_PARAMS = "555 MAIL FROM parameters not recognized or not implemented"
RCPT_PARAMS = "555 RCPT TO parameters not recognized or not implemented"
TOO_MUCH = "552 Error: Too much mail data"
FILL = 512 - len("MAIL from:<@example>")  # a MAIL command of exactly 512 bytes
FILL_UTF8 = 512 + 26 + 10 - len("mail from:<@example>")  # + SIZE and SMTPUTF8 extensions
ENVELOPE = """
    HELO example => *
    MAIL From:eggs@example => 250 OK
    RCPT To:spam@example => 250 OK
"""

DECODED = Settings(decode_data=True)  # CPython's SMTPDChannelTest
BYTES = Settings()
SMTPUTF8 = Settings(enable_SMTPUTF8=True)
SMALL_LIMIT = Settings(decode_data=True, channel_attrs={"data_size_limit": 1048})
LIMIT_32 = Settings(data_size_limit=32, decode_data=True)

# name: (settings, script, {channel attribute: its value after the session, or DELIVERED: the
# messages as (mailfrom, rcpttos, data)}). A QUIT is added to a script without one. The names are
# those of CPython's test methods.
DELIVERED = "delivered"
SEQUENCES: dict[str, tuple[Settings, str, dict[str, object]]] = {
    "missing_data": (DECODED, "=> 500 Error: bad syntax", {}),
    "EHLO": (DECODED, "EHLO example => 250 HELP", {}),
    "EHLO_bad_syntax": (DECODED, "EHLO => 501 Syntax: EHLO hostname", {}),
    "EHLO_duplicate": (DECODED, "EHLO example => *\nEHLO example => 503 Duplicate HELO/EHLO", {}),
    "EHLO_HELO_duplicate": (DECODED, "EHLO x => *\nHELO example => 503 Duplicate HELO/EHLO", {}),
    "HELO": (DECODED, f"HELO example => 250 {FQDN}", {"seen_greeting": "example"}),
    "HELO_EHLO_duplicate": (DECODED, "HELO x => *\nEHLO example => 503 Duplicate HELO/EHLO", {}),
    "HELO_duplicate": (DECODED, "HELO x => *\nHELO example => 503 Duplicate HELO/EHLO", {}),
    "HELO_bad_syntax": (DECODED, "HELO => 501 Syntax: HELO hostname", {}),
    "HELP": (DECODED, f"HELP => 250 {SUPPORTED}", {}),
    "HELP_command": (DECODED, "HELP MAIL => 250 Syntax: MAIL FROM: <address>", {}),
    "HELP_command_extended": (
        DECODED,
        f"EHLO example => *\nHELP RCPT => 250 Syntax: RCPT TO: <address>{EXTENDED}",
        {},
    ),
    "HELP_command_unknown": (DECODED, f"HELP SPAM => 501 {SUPPORTED}", {}),
    "HELO_parameter_rejected_when_extensions_not_enabled": (
        DECODED,
        f"HELO example => *\nMAIL from:<foo@example.com> SIZE=1234 => {MAIL_SYNTAX}",
        {},
    ),
    "MAIL_allows_space_after_colon": (
        DECODED,
        "HELO example => *\nMAIL from:   <foo@example.com> => 250 OK",
        {"mailfrom": "foo@example.com"},
    ),
    "extended_MAIL_allows_space_after_colon": (
        DECODED,
        "EHLO example => *\nMAIL from:   <foo@example.com> size=20 => 250 OK",
        {},
    ),
    "NOOP": (DECODED, "NOOP => 250 OK", {}),
    "HELO_NOOP": (DECODED, "HELO example => *\nNOOP => 250 OK", {}),
    "NOOP_bad_syntax": (DECODED, "NOOP hi => 501 Syntax: NOOP", {}),
    "QUIT": (DECODED, "QUIT => 221 Bye", {}),
    "HELO_QUIT": (DECODED, "HELO example => *\nQUIT => 221 Bye", {}),
    "QUIT_arg_ignored": (DECODED, "QUIT bye bye => 221 Bye", {}),
    # Input after QUIT: asynchat still runs it but never sends its replies; trio_chat stops.
    "QUIT_then_more": (DECODED, "QUIT => 221 Bye\nNOOP\nHELP", {}),
    # Every command gets this answer, QUIT too; the client's EOF ends the session.
    "bad_state": (
        Settings(decode_data=True, channel_attrs={"smtp_state": "BAD STATE"}),
        "HELO example => 451 Internal confusion\nQUIT => 451 Internal confusion",
        {},
    ),
    "command_too_long": (
        DECODED,
        f"HELO example => *\nMAIL from: {'a' * 512}@example => 500 Error: line too long",
        {},
    ),
    "MAIL_command_limit_extended_with_SIZE": (
        DECODED,
        f"""
        EHLO example => *
        MAIL from:<{"a" * FILL}@example> SIZE=1234 => 250 OK
        MAIL from:<{"a" * (FILL + 26)}@example> SIZE=1234 => 500 Error: line too long
        """,
        {},
    ),
    "MAIL_command_rejects_SMTPUTF8_by_default": (
        DECODED,
        "EHLO example => *\nMAIL from: <naive@example.com> BODY=8BITMIME SMTPUTF8 => 5...",
        {},
    ),
    # smtpd stays in the DATA state after a 552: the QUIT after it is data.
    "data_longer_than_default_data_size_limit": (
        SMALL_LIMIT,
        f"{ENVELOPE}\nDATA => 354...\n{'A' * 1049}\n. => {TOO_MUCH}\nQUIT",
        {},
    ),
    # Not in CPython's tests: the client goes away in the middle of a message.
    "EOF_in_the_middle_of_DATA": (BYTES, f"{ENVELOPE}\nDATA => 354...\nhalf a message\nQUIT", {}),
    # Not in CPython's tests: a 5 MiB command line, which smtpd stops collecting at 512 bytes.
    "command_of_5MiB": (
        BYTES,
        f"HELO x => *\nNOOP {'x' * (5 << 20)} => 500 Error: line too long\nNOOP => 250 OK",
        {},
    ),
    "MAIL_size_parameter": (
        DECODED,
        "EHLO x => *\nMAIL FROM:<eggs@example> SIZE=512 => 250 OK",
        {},
    ),
    "MAIL_invalid_size_parameter": (
        DECODED,
        f"EHLO x => *\nMAIL FROM:<eggs@example> SIZE=invalid => {MAIL_SYNTAX}{EXTENDED}",
        {},
    ),
    "MAIL_RCPT_unknown_parameters": (
        DECODED,
        f"""
        EHLO example => *
        MAIL FROM:<eggs@example> ham=green => {MAIL_PARAMS}
        MAIL FROM:<eggs@example> => 250 OK
        RCPT TO:<eggs@example> ham=green => {RCPT_PARAMS}
        """,
        {},
    ),
    "MAIL_size_parameter_larger_than_default_data_size_limit": (
        SMALL_LIMIT,
        "EHLO x => *\nMAIL FROM:<eggs@example> SIZE=2096 => 552 Error: message size exceeds"
        " fixed maximum message size",
        {},
    ),
    "need_MAIL": (DECODED, "HELO x => *\nRCPT to:spam@example => 503 Error: need MAIL command", {}),
    "MAIL_syntax_HELO": (DECODED, f"HELO x => *\nMAIL from eggs@example => {MAIL_SYNTAX}", {}),
    "MAIL_syntax_EHLO": (
        DECODED,
        f"EHLO x => *\nMAIL from eggs@example => {MAIL_SYNTAX}{EXTENDED}",
        {},
    ),
    "MAIL_missing_address": (DECODED, f"HELO x => *\nMAIL from: => {MAIL_SYNTAX}", {}),
    "MAIL_chevrons": (DECODED, "HELO x => *\nMAIL from:<eggs@example> => 250 OK", {}),
    "MAIL_empty_chevrons": (DECODED, "EHLO x => *\nMAIL from:<> => 250 OK", {}),
    **{
        f"MAIL_quoted_localpart{variant}": (
            DECODED,
            f"EHLO x => *\nMAIL from: {address} => 250 OK",
            {"mailfrom": '"Fred Blogs"@example.com'},
        )
        for variant, address in [
            ("", '<"Fred Blogs"@example.com>'),
            ("_no_angles", '"Fred Blogs"@example.com'),
            ("_with_size", '<"Fred Blogs"@example.com> SIZE=1000'),
            ("_with_size_no_angles", '"Fred Blogs"@example.com SIZE=1000'),
        ]
    },
    "nested_MAIL": (
        DECODED,
        """
        HELO example => *
        MAIL from:eggs@example => 250 OK
        MAIL from:spam@example => 503 Error: nested MAIL command
        """,
        {"mailfrom": "eggs@example"},
    ),
    "VRFY": (
        DECODED,
        "VRFY eggs@example => 252 Cannot VRFY user, but will accept message and attempt delivery",
        {},
    ),
    "VRFY_syntax": (DECODED, "VRFY => 501 Syntax: VRFY <address>", {}),
    "EXPN_not_implemented": (DECODED, "EXPN => 502 EXPN not implemented", {}),
    "no_HELO_MAIL": (DECODED, "MAIL from:<foo@example.com> => 503 Error: send HELO first", {}),
    "no_HELO_RCPT": (DECODED, "RCPT to eggs@example => 503 Error: send HELO first", {}),
    "no_HELO_DATA": (DECODED, "DATA spam => 503 Error: send HELO first", {}),
    "need_RCPT": (
        DECODED,
        "HELO x => *\nMAIL From:eggs@example => 250 OK\nDATA => 503 Error: need RCPT command",
        {},
    ),
    "RCPT_syntax_HELO": (
        DECODED,
        f"HELO x => *\nMAIL From: eggs@example => 250 OK\nRCPT to eggs@example => {RCPT_SYNTAX}",
        {},
    ),
    "RCPT_syntax_EHLO": (
        DECODED,
        f"EHLO x => *\nMAIL From: eggs@example => 250 OK\n"
        f"RCPT to eggs@example => {RCPT_SYNTAX}{EXTENDED}",
        {},
    ),
    "RCPT_lowercase_to_OK": (
        DECODED,
        "HELO x => *\nMAIL From: eggs@example => 250 OK\nRCPT to: <eggs@example> => 250 OK",
        {"rcpttos": ["eggs@example"]},
    ),
    "data_dialog": (
        DECODED,
        f"{ENVELOPE}\nDATA => 354 End data with <CR><LF>.<CR><LF>\ndata\nmore\n. => 250 OK",
        {
            "received_data": "data\nmore",
            DELIVERED: [("eggs@example", ["spam@example"], "data\nmore")],
        },
    ),
    "DATA_syntax": (DECODED, f"{ENVELOPE}\nDATA spam => 501 Syntax: DATA", {}),
    "data_transparency_section_4_5_2": (
        DECODED,
        f"{ENVELOPE}\nDATA => 354...\n..\n. => 250 OK",
        {"received_data": "."},
    ),
    "multiple_RCPT": (
        DECODED,
        f"{ENVELOPE}\nRCPT To:ham@example => 250 OK\nDATA => 354...\ndata\n. => 250 OK",
        {DELIVERED: [("eggs@example", ["spam@example", "ham@example"], "data")]},
    ),
    "manual_status": (
        DECODED,
        f"{ENVELOPE}\nDATA => 354...\nreturn status\n. => 250 Okish",
        {},
    ),
    "RSET": (
        DECODED,
        f"""
        {ENVELOPE}
        RSET => 250 OK
        MAIL From:foo@example => 250 OK
        RCPT To:eggs@example => 250 OK
        DATA => 354...
        data
        . => 250 OK
        """,
        {DELIVERED: [("foo@example", ["eggs@example"], "data")]},
    ),
    "HELO_RSET": (DECODED, "HELO example => *\nRSET => 250 OK", {}),
    "RSET_syntax": (DECODED, "RSET hi => 501 Syntax: RSET", {}),
    "unknown_command": (
        DECODED,
        'UNKNOWN_CMD => 500 Error: command "UNKNOWN_CMD" not recognized',
        {},
    ),
    "data_limit_dialog": (
        LIMIT_32,
        f"{ENVELOPE}\nDATA => 354...\ndata\nmore\n. => 250 OK",
        {"received_data": "data\nmore"},
    ),
    "data_limit_dialog_too_much_data": (
        LIMIT_32,
        f"{ENVELOPE}\nDATA => 354...\nThis message is longer than 32 bytes\n. => {TOO_MUCH}\nQUIT",
        {},
    ),
    "decode_data_false_ascii_data": (
        BYTES,
        f"{ENVELOPE}\nDATA => 354...\nplain ascii text\n. => 250 OK",
        {"received_data": b"plain ascii text"},
    ),
    "decode_data_false_utf8_data": (
        BYTES,
        f"{ENVELOPE}\nDATA => 354...\nutf8 enriched text: żźć\nand some plain ascii\n. => 250 OK",
        {"received_data": "utf8 enriched text: żźć\nand some plain ascii".encode()},
    ),
    "decode_data_true_utf8_data": (
        DECODED,
        f"{ENVELOPE}\nDATA => 354...\nutf8 enriched text: żźć\nand some plain ascii\n. => 250 OK",
        {"received_data": "utf8 enriched text: żźć\nand some plain ascii"},
    ),
    "RCPT_params_rejected": (
        BYTES,
        f"""
        EHLO example => *
        MAIL from: <foo@example.com> size=20 => 250 OK
        RCPT to: <foo@example.com> foo=bar => {RCPT_PARAMS}
        """,
        {},
    ),
    "RCPT_nothing_accepted": (
        BYTES,
        """
        EHLO example => *
        MAIL from: <foo@example.com> size=20 => 250 OK
        RCPT to: <foo@example.com> => 250 OK
        """,
        {},
    ),
    "MAIL_options_with_decode_data_true": (
        DECODED,
        f"""
        EHLO example => *
        MAIL from: <foo@example.com> size=20 SMTPUTF8 => {MAIL_PARAMS}
        MAIL from: <foo@example.com> size=20 SMTPUTF8 BODY=8BITMIME => {MAIL_PARAMS}
        MAIL from: <foo@example.com> size=20 BODY=UNKNOWN => {MAIL_PARAMS}
        MAIL from: <foo@example.com> size=20 body=8bitmime => {MAIL_PARAMS}
        MAIL from: <foo@example.com> size=20 => 250 OK
        """,
        {},
    ),
    "MAIL_options_with_decode_data_false": (
        BYTES,
        f"""
        EHLO example => *
        MAIL from: <foo@example.com> size=20 SMTPUTF8 => {MAIL_PARAMS}
        MAIL from: <foo@example.com> size=20 SMTPUTF8 BODY=8BITMIME => {MAIL_PARAMS}
        MAIL from: <foo@example.com> size=20 SMTPUTF8 BODY=UNKNOWN => 501 Error: BODY can only be one of 7BIT, 8BITMIME
        MAIL from: <foo@example.com> size=20 body=8bitmime => 250 OK
        """,  # noqa: E501  (one command per line)
        {"mail_options": ["SIZE=20", "BODY=8BITMIME"]},
    ),
    "MAIL_options_with_enable_smtputf8_true": (
        SMTPUTF8,
        "EHLO example => *\nMAIL from: <foo@example.com> size=20 body=8bitmime smtputf8 => 250 OK",
        {"require_SMTPUTF8": True},
    ),
    "MAIL_command_accepts_SMTPUTF8_when_announced": (
        SMTPUTF8,
        "EHLO example => *\nMAIL from: <naïve@example.com> BODY=8BITMIME SMTPUTF8 => 250 OK",
        {"mailfrom": "naïve@example.com"},
    ),
    "process_smtputf8_message": (
        SMTPUTF8,
        """
        EHLO example => *
        MAIL from: <a@example> => 250...
        rcpt to:<b@example.com> => 250...
        data => 354...
        c
        . => 250 OK
        MAIL from: <a@example> BODY=8BITMIME SMTPUTF8 => 250...
        rcpt to:<b@example.com> => 250...
        data => 354...
        c
        . => 250 SMTPUTF8 message okish
        """,
        {},
    ),
    "enable_SMTPUTF8_utf8_data": (
        SMTPUTF8,
        """
        EHLO example => *
        MAIL From: naïve@examplé BODY=8BITMIME SMTPUTF8 => 250...
        RCPT To:späm@examplé => 250...
        DATA => 354...
        utf8 enriched text: żźć
        . => 250...
        """,
        {"received_data": "utf8 enriched text: żźć".encode()},
    ),
    "MAIL_command_limit_extended_with_SIZE_and_SMTPUTF8": (
        SMTPUTF8,
        f"""
        ehlo example => *
        MAIL from:<{"a" * (FILL_UTF8 + 1)}@example> => 500 Error: line too long
        MAIL from:<{"a" * FILL_UTF8}@example> => 250 OK
        """,
        {},
    ),
    "multiple_emails_with_extended_command_length": (
        SMTPUTF8,
        "ehlo example => *\n"
        + "".join(
            f"""
            MAIL from:<{char * FILL_UTF8}a@example> => 500...
            MAIL from:<{char * FILL_UTF8}@example> => 250...
            rcpt to:<hans@example.com> => 250...
            data => 354...
            test
            . => 250...
            """
            for char in "abc"
        ),
        {},
    ),
}


def check_replies(transcript: bytes, steps: list[Step], quit_added: bool) -> None:
    got = [reply.decode("utf-8") for reply in replies(transcript)]
    wanted = [step.reply for step in steps if step.reply is not None]
    assert got[0] == f"220 {FQDN} {VERSION}"
    got = got[1:]
    if quit_added:
        assert got.pop() == "221 Bye"
    assert len(got) == len(wanted), got
    for reply, want in zip(got, wanted, strict=True):
        if want.endswith("..."):
            assert reply.startswith(want[:-3]), (reply, want)
        elif want != "*":
            assert reply == want


@pytest.mark.parametrize("name", list(SEQUENCES))
async def test_cpython_sequence(servers: Servers, name: str) -> None:
    settings, text, state = SEQUENCES[name]
    steps = script(text)
    servers.configure(settings)
    session = b"".join(step.data for step in steps)
    quit_added = not any(step.line.startswith("QUIT") for step in steps)
    if quit_added:
        session += b"QUIT\r\n"
    with trio.fail_after(TIMEOUT):
        (original, original_client), (rebuilt, rebuilt_client) = [
            await pipelined(port, session) for port in servers.ports
        ]
    assert rebuilt == original
    check_replies(rebuilt, steps, quit_added)
    old_box, new_box = servers.mailboxes
    assert len(old_box.messages) == len(new_box.messages)
    for message_pair in zip(old_box.messages, new_box.messages, strict=True):
        same_message(*message_pair, (original_client, rebuilt_client))
    [old_channel], [new_channel] = old_box.channels, new_box.channels
    assert old_channel.peer == original_client
    assert new_channel.peer == new_channel.addr == rebuilt_client
    for attribute, value in state.items():
        if attribute == DELIVERED:
            assert [message[1:4] for message in new_box.messages] == value
        else:
            assert getattr(old_channel, attribute) == getattr(new_channel, attribute) == value
    for attribute in ("smtp_state", "seen_greeting", "mailfrom", "rcpttos", "received_data"):
        assert getattr(old_channel, attribute) == getattr(new_channel, attribute)


async def test_deprecated_attribute_names_still_warn(servers: Servers) -> None:
    """smtpd's ``_SMTPChannel__*`` properties (CPython's test_attribute_deprecations)."""
    servers.configure(DECODED)
    with trio.fail_after(TIMEOUT):
        await pipelined(servers.trio_port, b"HELO example\r\nQUIT\r\n")
    [channel] = servers.trio_mailbox.channels
    for name, target in [
        ("server", "smtp_server"),
        ("line", "received_lines"),
        ("state", "smtp_state"),
        ("greeting", "seen_greeting"),
        ("mailfrom", "mailfrom"),
        ("rcpttos", "rcpttos"),
        ("data", "received_data"),
        ("fqdn", "fqdn"),
        ("peer", "peer"),
        ("conn", "conn"),
        ("addr", "addr"),
    ]:
        with pytest.warns(DeprecationWarning, match=target):
            value = getattr(channel, f"_SMTPChannel__{name}")
        assert value is getattr(channel, target)
        with pytest.warns(DeprecationWarning, match=target):
            setattr(channel, f"_SMTPChannel__{name}", "spam")
        assert getattr(channel, target) == "spam"


async def test_decode_data_and_enable_smtputf8_raises() -> None:
    sockets = trio.socket.socketpair()
    with sockets[0], sockets[1], pytest.raises(ValueError, match="cannot be set to True"):
        TrioSMTPChannel(Mailbox(), sockets[0], None, enable_SMTPUTF8=True, decode_data=True)


# ------------------------------------------------------------------ smtplib


def message(size: int, seed: str) -> bytes:
    """A mail of about *size* bytes: headers, then lines of 76 characters, every 50th starting
    with a dot (smtplib doubles it, smtpd removes it again)."""
    head = f"From: eggs@example\r\nTo: spam@example\r\nSubject: {seed}\r\n\r\n".encode()
    line = (seed * 76)[:76].encode()
    dotted = b"." + line[1:]
    count = max(1, (size - len(head)) // 78)
    return head + b"".join((dotted if n % 50 == 0 else line) + CRLF for n in range(count))


def smtplib_session(port: int, mail: bytes) -> dict[str, Any]:
    """One smtplib client: every reply it got, in order."""
    with smtplib.SMTP(HOST, port, timeout=TIMEOUT) as client:
        assert client.sock is not None
        record: dict[str, Any] = {"client": client.sock.getsockname()}
        record["ehlo"] = client.ehlo("example")
        record["esmtp"] = dict(client.esmtp_features)
        record["noop"] = client.noop()
        record["refused"] = client.sendmail("eggs@example", ["spam@example", "ham@example"], mail)
        record["quit"] = client.quit()
    return record


async def in_thread(
    function: Callable[[], Any], limiter: trio.CapacityLimiter | None = None
) -> Any:
    return await trio.to_thread.run_sync(function, abandon_on_cancel=True, limiter=limiter)


def delivered(mail: bytes) -> bytes:
    """What smtpd passes to process_message for *mail* sent by smtplib (decode_data=False)."""
    lines = mail.split(CRLF)
    assert lines.pop() == b""
    return b"\n".join(lines)


@pytest.mark.parametrize("size", [1 << 20, 20 << 20], ids=["1MiB", "20MiB"])
async def test_smtplib_large_message(servers: Servers, size: int) -> None:
    mail = message(size, f"size {size}")
    with trio.fail_after(TIMEOUT):
        original = await in_thread(partial(smtplib_session, servers.original.port, mail))
        rebuilt = await in_thread(partial(smtplib_session, servers.trio_port, mail))
    assert original.pop("client") != rebuilt.pop("client")
    assert original == rebuilt
    assert rebuilt["refused"] == {}
    assert rebuilt["quit"] == (221, b"Bye")
    assert rebuilt["esmtp"]["size"] == str(DATA_SIZE_DEFAULT)
    old_box, new_box = servers.mailboxes
    [(_, *old)], [(_, *new)] = old_box.messages, new_box.messages
    assert old == new
    assert new[2] == delivered(mail)
    assert len(mail) >= size - 100


def greet_wait_send(port: int, number: int, barrier: threading.Barrier) -> dict[str, Any]:
    """One of many smtplib clients: greets, waits for all the others, then sends its mail."""
    with smtplib.SMTP(HOST, port, timeout=TIMEOUT) as client:
        record: dict[str, Any] = {"ehlo": client.ehlo("example")}
        barrier.wait()
        mail = message(2000, f"client {number}")
        record["refused"] = client.sendmail(f"c{number}@example", ["spam@example"], mail)
        record["quit"] = client.quit()
    return record


async def many_clients(port: int, clients: int) -> list[dict[str, Any]]:
    """*clients* smtplib clients connected at once, each in its own thread."""
    limiter = trio.CapacityLimiter(clients)
    barrier = threading.Barrier(clients, timeout=TIMEOUT)
    records: list[dict[str, Any]] = [{}] * clients

    async def client(number: int) -> None:
        records[number] = await in_thread(partial(greet_wait_send, port, number, barrier), limiter)

    async with trio.open_nursery() as nursery:
        for number in range(clients):
            nursery.start_soon(client, number)
    return records


async def test_smtplib_sixty_connections_at_once(servers: Servers) -> None:
    clients = 60
    with trio.fail_after(TIMEOUT):
        results = {port: await many_clients(port, clients) for port in servers.ports}
    original, rebuilt = (results[port] for port in servers.ports)
    assert original == rebuilt
    assert all(record["refused"] == {} and record["quit"] == (221, b"Bye") for record in rebuilt)
    old_box, new_box = servers.mailboxes
    by_sender = [sorted(message[1:4] for message in box.messages) for box in (old_box, new_box)]
    assert by_sender[0] == by_sender[1]
    assert len(by_sender[1]) == clients
    assert len(new_box.channels) == clients
    for mailfrom, _, data in by_sender[1]:
        number = int(mailfrom[1:].split("@")[0])
        assert data == delivered(message(2000, f"client {number}"))


# ------------------------------------------------------------------ pipelining and errors


async def test_pipelined_sessions_with_two_messages(servers: Servers) -> None:
    servers.configure(BYTES)
    mail = message(200_000, "pipelined")
    dotted = mail.replace(b"\r\n.", b"\r\n..")
    session = (
        b"EHLO example\r\nMAIL FROM:<eggs@example> BODY=8BITMIME\r\nRCPT TO:<spam@example>\r\n"
        b"DATA\r\n" + dotted + b".\r\nRSET\r\nMAIL FROM:<ham@example>\r\nRCPT TO:<eggs@example>\r\n"
        b"DATA\r\n" + dotted + b".\r\nNOOP\r\nQUIT\r\n"
    )
    with trio.fail_after(TIMEOUT):
        (original, original_client), (rebuilt, rebuilt_client) = [
            await pipelined(port, session) for port in servers.ports
        ]
    assert rebuilt == original
    assert [reply[:3] for reply in replies(rebuilt)] == [
        b"220", b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"250", b"354", b"250",
        b"250", b"221",
    ]  # fmt: skip
    old_box, new_box = servers.mailboxes
    assert len(new_box.messages) == 2
    for message_pair in zip(old_box.messages, new_box.messages, strict=True):
        same_message(*message_pair, (original_client, rebuilt_client))
    assert new_box.messages[0][3] == new_box.messages[1][3] == delivered(mail)
    assert new_box.messages[0][4] == {"mail_options": ["BODY=8BITMIME"], "rcpt_options": []}


BOOM_SESSION = script(f"""
    EHLO example => *
    MAIL FROM:<eggs@example> => 250 OK
    RCPT TO:<spam@example> => 250 OK
    DATA => 354...
    this message says {BOOM}
""")


async def test_a_hook_raises_pipelined(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    """process_message raises at the end of the message; the replies to the commands before it,
    in the same read, are sent (asynchat sent each at once), then the connection closes."""
    session = b"".join(step.data for step in BOOM_SESSION) + b".\r\nNOOP\r\nQUIT\r\n"
    with trio.fail_after(TIMEOUT):
        (original, _), (rebuilt, _) = [await pipelined(port, session) for port in servers.ports]
    assert rebuilt == original
    check_replies(rebuilt, BOOM_SESSION, quit_added=False)
    assert "HookError" in capsys.readouterr().out  # asyncore's handle_error printed it
    for mailbox in servers.mailboxes:
        assert len(mailbox.messages) == 1


class HookErrorLogged(logging.Handler):
    """Sets ``seen`` when a HookError is logged with its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and isinstance(record.exc_info[1], HookError):
            self.seen.set()


async def test_a_hook_raises_in_lockstep(servers: Servers) -> None:
    """The same, a command at a time: each reply is read before the next command is sent."""
    logged = HookErrorLogged()
    logging.getLogger("trio_chat").addHandler(logged)

    async def lockstep(port: int) -> list[bytes]:
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            buffered = b""
            got: list[bytes] = []

            async def reply() -> None:
                nonlocal buffered
                while not (complete := replies_in(buffered)):
                    chunk = await stream.receive_some(1 << 16)
                    if not chunk:
                        got.append(b"EOF")
                        return
                    buffered += chunk
                got.extend(complete)
                buffered = b""

            await reply()
            for step in BOOM_SESSION:
                await stream.send_all(step.data)
                if step.reply is not None:
                    await reply()
            await stream.send_all(b".\r\n")
            await reply()
            return got

    with trio.fail_after(TIMEOUT):
        original, rebuilt = [await lockstep(port) for port in servers.ports]
    assert rebuilt == original
    assert rebuilt[-1] == b"EOF"
    assert [line[:3] for line in rebuilt[:-1]] == [b"220", b"250", b"250", b"250", b"354"]
    # serve_tcp logs the error with its traceback, as asyncore's handle_error() printed it.
    try:
        with trio.fail_after(TIMEOUT):
            await logged.seen.wait()
    finally:
        logging.getLogger("trio_chat").removeHandler(logged)


def replies_in(buffered: bytes) -> list[bytes]:
    """The complete replies in *buffered* (empty until the last line of one has arrived)."""
    if not buffered.endswith(CRLF):
        return []
    found = replies(buffered)
    return found if buffered.split(CRLF)[-2][3:4] != b"-" else []
