"""What a regex terminator may still need: the analysis that makes regex framing chunk-independent.

This module never imports trio (or does any I/O). It serves ``_buffer._RegexReader``.

The problem
-----------
``pattern.search(buffered)`` can answer differently once more bytes arrive: with ``rb"\\n\\n+"``
the match ``b"\\n\\n"`` at the end of the buffer may grow, and with ``rb"abc|b"`` the match ``b"b"``
in ``b"ab"`` loses to ``b"abc"`` if a ``c`` follows. A match is only *settled* when no attempt
starting at or before it could turn out differently.

The rule
--------
The attempt of the regex engine at a start position ``s`` can change with more input only if
one of its paths inspects position ``L`` (the end of the buffered bytes): to consume a byte
there, or for ``$``, ``\\Z`` or a lookahead. Such a path has consumed ``buffered[s:L]`` up to
then, so ``buffered[s:L]`` belongs to the *pending language* of the pattern, built here from
``re``'s own parse tree:

* a byte-consuming atom: ``{""}`` (it looks at the next byte);
* ``X Y``: ``Pend(X) | X Pend(Y)``;  ``X | Y``: ``Pend(X) | Pend(Y)``;
* ``X{m,n}``: ``X{0,n-1} Pend(X)``;  lookahead ``(?=X)``, ``(?!X)``: ``Pend(X)``;
* ``\\Z``: ``{""}``;  ``$``: ``{"", one byte}`` (it also matches before a final newline).

It over-approximates (assertions inside ``X`` are dropped, atomic groups and possessive or lazy
repeats are read as greedy), which only ever makes the reader wait longer, never report early.
A start ``s`` is *pending* when ``buffered[s:L]`` fully matches the compiled pending pattern.
Everything before the first pending start is decided: the reader hands it over, and reports a
match once no start at or before it is pending.

Backward-looking constructs (``^``, ``\\A``, ``\\b``, ``\\B``, lookbehind) would see bytes that
were already handed over, and backreferences cannot be rewritten into the pending pattern, so
such patterns are refused, as are patterns that can match the empty string.

The cost
--------
The analysis runs once per pattern (cached). A pattern whose matches inspect at most ``reach``
bytes from their start only ever has pending starts among the last ``reach`` buffered bytes; for
unbounded patterns (``+``, ``*``, ``{n,}``) the check walks the candidate starts (bytes that can
begin a match) from the first undecided one, each candidate once per read.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from typing import Any, Final

import attrs

__all__ = ["RegexPlan", "plan_regex"]

# re's parser is private (re._parser since 3.11, sre_parse before), but it is what re.compile
# itself runs, so its tree is exactly the pattern's meaning. Looked up dynamically: typeshed has
# no stubs for it.
try:
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - Python 3.10
    _parser = importlib.import_module("sre_parse")
    _c = importlib.import_module("sre_constants")

_MAXREPEAT: Final = _c.MAXREPEAT
_ATOMIC_GROUP: Final = getattr(_c, "ATOMIC_GROUP", object())  # 3.11+
_POSSESSIVE_REPEAT: Final = getattr(_c, "POSSESSIVE_REPEAT", object())  # 3.11+

_CATEGORIES: Final = {
    _c.CATEGORY_DIGIT: r"\d",
    _c.CATEGORY_NOT_DIGIT: r"\D",
    _c.CATEGORY_SPACE: r"\s",
    _c.CATEGORY_NOT_SPACE: r"\S",
    _c.CATEGORY_WORD: r"\w",
    _c.CATEGORY_NOT_WORD: r"\W",
}

# Inline flag letters for local flag groups; VERBOSE is left out on purpose: the rewritten
# pattern contains no whitespace or comments, every byte is written as an \xHH escape.
_FLAG_LETTERS: Final = (
    (re.IGNORECASE, "i"),
    (re.LOCALE, "L"),
    (re.MULTILINE, "m"),
    (re.DOTALL, "s"),
    (re.ASCII, "a"),
)

_ANY_BYTE: Final = r"[\x00-\xff]"

_BACKWARD: Final = {
    _c.AT_BEGINNING: "^",
    _c.AT_BEGINNING_STRING: r"\A",
    _c.AT_BOUNDARY: r"\b",
    _c.AT_NON_BOUNDARY: r"\B",
}


@attrs.frozen
class RegexPlan:
    """What the reader needs to know about a regex terminator (see the module docstring).

    Attributes:
        pattern: the terminator.
        pending: matches ``buffered[s:L]`` (anchored at ``s``, up to ``L``) when start ``s`` is
            pending.
        first: matches one byte that can begin a match (a superset).
        reach: the most bytes from its start that one attempt can inspect, or None (unbounded).
    """

    pattern: re.Pattern[bytes]
    pending: re.Pattern[bytes]
    first: re.Pattern[bytes]
    reach: int | None


def _refuse(pattern: re.Pattern[bytes], what: str) -> ValueError:
    return ValueError(
        f"regex terminator {pattern!r} uses {what}, which a stream framer cannot support; "
        "rewrite the pattern without it"
    )


def _esc(byte: int) -> str:
    return f"\\x{byte:02x}"


def _alt(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return f"(?:{a}|{b})"


def _quant(lo: int, hi: int) -> str:
    if hi == _MAXREPEAT:
        return f"{{{lo},}}"
    return f"{{{lo},{hi}}}"


@attrs.define
class _Node:
    """One parse-tree node rewritten: what it consumes and its pending language."""

    consume: str  # a regex (an atom or a group) for a superset of the strings it consumes
    pend: str | None  # the pending language, None for the empty language
    minw: float  # fewest bytes consumed
    maxw: float  # most bytes consumed (math.inf: unbounded)
    reach: float  # most bytes inspected from its start (math.inf: unbounded)


class _Rewriter:
    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.atoms: list[str] = []  # every byte-consuming atom, for the "first byte" class
        self.any_first = False  # a $ makes any byte a possible first byte of a pending start

    def seq(self, items: Any) -> _Node:
        nodes = [self.item(op, av) for op, av in items]
        consume = "".join(n.consume for n in nodes)
        # Right fold, so the result stays linear in the pattern's size:
        # Pend(X1 X2 .. Xn) = Pend(X1) | X1 Pend(X2 .. Xn).
        pend: str | None = None
        for node in reversed(nodes):
            rest = None if pend is None else node.consume + pend
            pend = _alt(node.pend, rest)
        minw = maxw = reach = 0.0
        for node in nodes:
            reach = max(reach, maxw + node.reach)
            minw += node.minw
            maxw += node.maxw
        return _Node(f"(?:{consume})", pend, minw, maxw, reach)

    def atom(self, source: str) -> _Node:
        self.atoms.append(source)
        return _Node(source, "", 1, 1, 1)

    def item(self, op: Any, av: Any) -> _Node:
        c = _c
        if op is c.LITERAL:
            return self.atom(_esc(av))
        if op is c.NOT_LITERAL:
            return self.atom(f"[^{_esc(av)}]")
        if op is c.ANY:
            return self.atom(".")
        if op is c.IN:
            return self.atom(self.char_class(av))
        if op is c.BRANCH:
            alts = [self.seq(alt) for alt in av[1]]
            pend: str | None = None
            for alt in alts:
                pend = _alt(pend, alt.pend)
            return _Node(
                "(?:" + "|".join(a.consume for a in alts) + ")",
                pend,
                min(a.minw for a in alts),
                max(a.maxw for a in alts),
                max(a.reach for a in alts),
            )
        if op is c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            first_atom = len(self.atoms)
            inner = self.seq(sub)
            flags = self.flag_prefix(add_flags, del_flags)
            if flags:  # the atoms keep their local flags in the "first byte" class too
                self.atoms[first_atom:] = [f"(?{flags}:{a})" for a in self.atoms[first_atom:]]
            return _Node(
                f"(?{flags}:{inner.consume})",
                None if inner.pend is None else f"(?{flags}:{inner.pend})",
                inner.minw,
                inner.maxw,
                inner.reach,
            )
        if op is _ATOMIC_GROUP:
            return self.seq(av)
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, _POSSESSIVE_REPEAT):
            return self.repeat(*av)
        if op is c.AT:
            if av in _BACKWARD:
                raise _refuse(
                    self.pattern, f"{_BACKWARD[av]} (it looks at bytes already handed over)"
                )
            if av is c.AT_END_STRING:
                return _Node("", "", 0, 0, 1)
            # $ looks at the next byte and whether the one after it ends the input.
            self.any_first = True
            return _Node("", f"{_ANY_BYTE}?", 0, 0, 2)
        if op in (c.ASSERT, c.ASSERT_NOT):
            direction, sub = av
            if direction < 0:
                raise _refuse(self.pattern, "a lookbehind (it looks at bytes already handed over)")
            inner = self.seq(sub)
            return _Node("", inner.pend, 0, 0, inner.reach)
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise _refuse(self.pattern, "a backreference")
        raise _refuse(self.pattern, f"the construct {op}")  # pragma: no cover - future opcodes

    def char_class(self, items: Any) -> str:
        parts = []
        for op, av in items:
            if op is _c.NEGATE:
                parts.append("^")
            elif op is _c.LITERAL:
                parts.append(_esc(av))
            elif op is _c.RANGE:
                parts.append(f"{_esc(av[0])}-{_esc(av[1])}")
            elif op is _c.CATEGORY and av in _CATEGORIES:
                parts.append(_CATEGORIES[av])
            else:  # pragma: no cover - not produced by the parser for bytes patterns
                raise _refuse(self.pattern, f"the character class item {op} {av}")
        return "[" + "".join(parts) + "]"

    def repeat(self, lo: int, hi: int, sub: Any) -> _Node:
        inner = self.seq(sub)
        consume = f"{inner.consume}{_quant(lo, hi)}"
        if hi == 0 or inner.pend is None:
            pend = None
        else:
            pend = f"{inner.consume}{_quant(0, hi if hi == _MAXREPEAT else hi - 1)}{inner.pend}"
        unbounded = hi == _MAXREPEAT
        maxw = inner.maxw * hi if not unbounded else (math.inf if inner.maxw else 0)
        if hi == 0:
            reach = 0.0
        elif unbounded:
            reach = math.inf if inner.maxw else inner.reach
        else:
            reach = (hi - 1) * inner.maxw + inner.reach
        return _Node(consume, pend, inner.minw * lo, maxw, reach)

    def flag_prefix(self, add: int, delete: int) -> str:
        on = "".join(letter for flag, letter in _FLAG_LETTERS if add & flag)
        off = "".join(letter for flag, letter in _FLAG_LETTERS if delete & flag)
        return on + ("-" + off if off else "")


@functools.lru_cache(maxsize=64)
def plan_regex(pattern: re.Pattern[bytes]) -> RegexPlan:
    """Analyse a regex terminator once; cached, since drivers may set the same one per frame.

    Raises:
        TypeError: *pattern* is a ``str`` pattern.
        ValueError: *pattern* can match the empty string, or uses a construct that looks behind
            the match start or refers back to a group.
    """
    if not isinstance(pattern.pattern, bytes):
        raise TypeError(
            f"a regex terminator must be a bytes pattern, not {pattern!r} "
            f"(compile it from bytes: re.compile({pattern.pattern.encode()!r}))"
        )
    flags = pattern.flags & ~re.VERBOSE
    rewriter = _Rewriter(pattern)
    root = rewriter.seq(_parser.parse(pattern.pattern, pattern.flags))
    if root.minw < 1:
        raise ValueError(
            f"regex terminator {pattern!r} can match the empty string, which would end every "
            "frame at once; make it match at least one byte"
        )
    assert root.pend is not None  # a pattern that consumes a byte looks at one first
    pending = re.compile(f"(?:{root.pend})\\Z".encode("ascii"), flags)
    first_source = _ANY_BYTE if rewriter.any_first else "|".join(rewriter.atoms)
    first = re.compile(first_source.encode("ascii"), flags)
    reach = None if math.isinf(root.reach) else int(root.reach)
    return RegexPlan(pattern, pending, first, reach)
