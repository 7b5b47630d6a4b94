"""The documentation's code is tested: doctests run, and included files are run by tests."""

from __future__ import annotations

import ast
import doctest
import inspect
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from kv_chat import KVChat

import trio_chat
import trio_chat.testing
from trio_chat.testing import Peer, exchange, open_peer

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.rst"))

DOCTEST_PAGES = [page for page in PAGES if ">>> " in page.read_text(encoding="utf-8")]


def test_the_pages_with_doctests_are_found() -> None:
    assert {"design.rst", "migration.rst"} <= {page.name for page in DOCTEST_PAGES}


@pytest.mark.parametrize("page", DOCTEST_PAGES, ids=lambda page: page.name)
def test_doctests(page: Path) -> None:
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS,
        raise_on_error=False,
        verbose=False,
    )
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {page.name}, see above"


def _directives(name: str) -> list[tuple[Path, str]]:
    """(page, argument) of every ``.. name::`` directive in the docs."""
    pattern = re.compile(rf"^\s*\.\. {name}::[ \t]*(.*)$", re.MULTILINE)
    return [
        (page, match[1].strip())
        for page in PAGES
        for match in pattern.finditer(page.read_text(encoding="utf-8"))
    ]


def test_included_files_exist_and_examples_are_run_by_a_test() -> None:
    tests = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("*.py"))
    includes = _directives("literalinclude")
    assert includes
    for page, argument in includes:
        path = (page.parent / argument).resolve()
        assert path.is_file(), f"{page.name}: {argument} does not exist"
        if ROOT / "examples" in path.parents:
            # Imported (by module name) or run (by file name) by some test.
            assert path.stem in tests, f"{page.name} includes {argument}, which no test runs"


def test_code_blocks_are_commands_or_output_only() -> None:
    # Python in the docs is either a doctest (run above) or a literalinclude of a file that a
    # test runs; code-block is for shell commands and their output.
    for page, language in _directives("(?:code-block|code|sourcecode)"):
        assert language in {"console", "shell", "text", "none"}, (
            f"{page.name}: a {language or 'plain'} code block is not tested: make it a doctest "
            "or a literalinclude of an example that a test runs"
        )


def _literal_blocks(text: str) -> list[str]:
    """The literal blocks of reStructuredText *text*: the indented text after a paragraph that
    ends with ``::`` (not a directive's), dedented."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.endswith("::") or stripped.startswith(".."):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[i + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        blocks.append(textwrap.dedent("\n".join(body)).strip())
    return blocks


def _is_python(text: str) -> bool:
    """Whether *text* parses as Python (top-level ``await`` and ``async with`` included)."""
    for source in (text, "async def _():\n" + textwrap.indent(text, "    ")):
        try:
            ast.parse(source)
        except SyntaxError:
            continue
        return True
    return False


def test_literal_blocks_are_not_python() -> None:
    # A literal block (after "::") is neither run nor checked: it is for diagrams, formulas,
    # protocol sketches and sessions. Python goes in a doctest or a literalinclude.
    for page in PAGES:
        for block in _literal_blocks(page.read_text(encoding="utf-8")):
            assert not _is_python(block), (
                f"{page.name}: this literal block is Python that no test runs: make it a doctest "
                f"or a literalinclude of a file that a test runs:\n{block}"
            )


def test_literal_blocks_are_found() -> None:
    blocks = _literal_blocks("Intro::\n\n    x = 1\n\n.. note::\n\n    no\n\nText.\n")
    assert blocks == ["x = 1"]
    assert _is_python("x = 1") and _is_python("await f()\nasync with g():\n    pass")
    assert not _is_python("M ≈ a + b") and not _is_python("nc 127.0.0.1 7000")


# The reference (autodoc) shows these docstrings' examples: each runs here. An example that
# defines tests is run at module level and its tests are called; any other is the body of a
# coroutine whose ``peer`` is connected to a KVChat (examples/kv_chat.py).
TESTING_EXAMPLES: list[Any] = [
    trio_chat.testing,
    open_peer,
    Peer.send_chunks,
    Peer.receive_all_until_eof,
    exchange,
]


def _python_examples(obj: object) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    return [block for block in _literal_blocks(doc) if _is_python(block)]


@pytest.mark.parametrize("obj", TESTING_EXAMPLES, ids=lambda obj: obj.__name__)
async def test_the_examples_in_trio_chat_testing_run(obj: object) -> None:
    examples = _python_examples(obj)
    assert examples
    namespace: dict[str, Any] = {"trio": trio, "trio_chat": trio_chat, "KVChat": KVChat}
    namespace.update((name, getattr(trio_chat.testing, name)) for name in trio_chat.testing.__all__)
    with trio.fail_after(10):
        for source in examples:
            if "def test_" in source:
                exec(source, namespace)
                tests: list[Callable[[], Any]] = [
                    value for name, value in namespace.items() if name.startswith("test_")
                ]
                assert tests
                for test in tests:
                    await test()
            else:
                exec("async def example(peer):\n" + textwrap.indent(source, "    "), namespace)
                async with open_peer(KVChat()) as peer:
                    await namespace["example"](peer)


async def test_the_framed_stream_example_runs() -> None:
    (source,) = _python_examples(trio_chat.FramedStream)
    namespace: dict[str, Any] = {"trio": trio, "trio_chat": trio_chat}
    exec(source, namespace)
    with trio.fail_after(5):
        assert await exchange(namespace["handle"], b"one\r\ntwo\n") == b"ONE\r\nTWO\r\n"


async def test_the_receive_frames_example_runs() -> None:
    (source,) = _python_examples(trio_chat.FramedStream.receive_frames)
    lines: list[bytes] = []
    namespace: dict[str, Any] = {"trio": trio, "handle": lines.append}
    exec("async def example(stream):\n" + textwrap.indent(source, "    "), namespace)

    async def task(raw: trio.abc.Stream) -> None:
        await namespace["example"](trio_chat.FramedStream(raw))

    with trio.fail_after(5):
        assert await exchange(task, [b"one\ntw", b"o\nthree\n"]) == b""
    assert lines == [b"one", b"two", b"three"]


def test_the_task_tree_picture_names_the_real_tasks() -> None:
    svg = DOCS / "_static" / "task-tree.svg"
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join("".join(element.itertext()) for element in root.iter())
    for part in [
        "serve_listeners",
        "accept loop",
        "connection 1",
        "handler.run()",
        "receive loop",
        "send loop",
        "close() cancels it",
    ]:
        assert part in text, part
    assert "_static/task-tree.svg" in (DOCS / "tutorial.rst").read_text(encoding="utf-8")
