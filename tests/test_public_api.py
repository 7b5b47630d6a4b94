"""The public surface as a user meets it: names, runtime-evaluable aliases, module names.

``tests/typing/user_program.py`` is the user: CI type-checks it (mypy --strict, pyright strict)
against the installed wheel; here it runs, its annotations are evaluated, and it must keep
naming every public name.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import pickle
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from types import GenericAlias, ModuleType

import pytest

import trio_chat
import trio_chat.testing

USER_PROGRAM = Path(__file__).parent / "typing" / "user_program.py"

# The public type aliases: documented as types users annotate their own code with.
ALIASES = {
    "trio_chat.Terminator": trio_chat.Terminator,
    "trio_chat.Delimiter": trio_chat.Delimiter,
    "trio_chat.Event": trio_chat.Event,
    "trio_chat.BufferEvent": trio_chat.BufferEvent,
    "trio_chat.ProducerLike": trio_chat.ProducerLike,
    "trio_chat.HandlerFactory": trio_chat.HandlerFactory,
    "trio_chat.testing.Target": trio_chat.testing.Target,
}


def _public(module: ModuleType) -> list[tuple[str, object]]:
    return [(f"{module.__name__}.{name}", getattr(module, name)) for name in module.__all__]


PUBLIC = _public(trio_chat) + _public(trio_chat.testing)


def _is_class(obj: object) -> typing.TypeGuard[type]:
    # Python 3.10 counts parametrized generics (HandlerFactory's Callable[...]) as classes.
    return inspect.isclass(obj) and not isinstance(obj, GenericAlias)


@pytest.fixture(scope="module")
def user_program() -> ModuleType:
    spec = importlib.util.spec_from_file_location("user_program", USER_PROGRAM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_program"] = module  # get_type_hints() looks classes' modules up there
    spec.loader.exec_module(module)
    return module


def test_the_user_program_names_every_public_name() -> None:
    tree = ast.parse(USER_PROGRAM.read_text(encoding="utf-8"))
    used = {
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in ("trio_chat", "trio_chat.testing")
        for alias in node.names
    }
    used |= {
        f"trio_chat.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "trio_chat"
    }
    missing = sorted({name for name, _ in PUBLIC} - used)
    assert not missing, f"use these in {USER_PROGRAM.name} the way the docs do: {missing}"


async def test_the_user_program_runs(user_program: ModuleType) -> None:
    await user_program.main()


def test_the_user_programs_annotations_evaluate(user_program: ModuleType) -> None:
    checked = 0
    for _, obj in inspect.getmembers(user_program):
        if getattr(obj, "__module__", None) != "user_program":
            continue
        functions = [obj] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            functions = [f for f in vars(obj).values() if inspect.isfunction(f)]
        for function in functions:
            typing.get_type_hints(function)
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("name", ALIASES)
def test_aliases_are_runtime_values(name: str) -> None:
    alias = ALIASES[name]
    assert not isinstance(alias, str), f"{name} is a string at run time: {alias!r}"

    def annotated(value: object) -> None:
        pass

    # What `def f(value: trio_chat.Terminator)` stores under `from __future__ import annotations`.
    annotated.__annotations__ = {"value": name}
    assert typing.get_type_hints(annotated)["value"] == alias


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"data", True),
        (trio_chat.TerminatorFound(b"\r\n"), True),
        (trio_chat.NEED_DATA, True),
        (trio_chat.END_OF_INPUT, True),
        ("text", False),
        (None, False),
    ],
)
def test_isinstance_of_an_event(value: object, expected: bool) -> None:
    assert isinstance(value, trio_chat.Event) is expected
    assert isinstance(value, trio_chat.BufferEvent) is expected


def test_buffer_event_is_event_under_a_name_unlike_trio_event() -> None:
    assert trio_chat.BufferEvent == trio_chat.Event


@pytest.mark.parametrize(
    ("name", "obj"),
    [(name, obj) for name, obj in PUBLIC if _is_class(obj) or inspect.isfunction(obj)],
)
def test_public_classes_and_functions_name_their_public_module(name: str, obj: object) -> None:
    module = name.rpartition(".")[0]
    assert getattr(obj, "__module__", None) == module
    assert getattr(sys.modules[module], getattr(obj, "__qualname__", "")) is obj


def test_public_objects_pickle_by_their_public_name() -> None:
    found = trio_chat.TerminatorFound(b"\r\n")
    data = pickle.dumps(found)
    assert b"trio_chat._" not in data
    assert pickle.loads(data) == found


@pytest.mark.parametrize(
    "function",
    [
        obj
        for _, obj in PUBLIC
        if inspect.isfunction(obj) or (_is_class(obj) and not issubclass(obj, BaseException))
    ],
    ids=lambda obj: getattr(obj, "__qualname__", repr(obj)),
)
def test_public_signatures_evaluate(function: Callable[..., object]) -> None:
    # What typing.get_type_hints(), attrs, cattrs, pydantic, FastAPI-style tools and
    # sphinx-autodoc-typehints do with our names: no NameError from a name that exists only
    # for type checkers.
    targets: list[Callable[..., object]] = [function]
    if _is_class(function):
        targets = [
            member
            for name, member in vars(function).items()
            if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__")
        ]
    for target in targets:
        typing.get_type_hints(target)
