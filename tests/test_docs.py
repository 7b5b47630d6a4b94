"""The documentation's code is tested: doctests run, and included files are run by tests."""

from __future__ import annotations

import doctest
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

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
