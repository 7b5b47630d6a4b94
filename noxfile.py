"""nox sessions: tests, lint, typecheck, docs, bench, bench_suite."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "-n", "--keep-going", "-b", "html", "docs", "docs/_build/html"
    )


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_buffer.py", *session.posargs)


# The peers the suite compares trio_chat with (benchmarks/suite/run_suite.py), and matplotlib
# for the chart it draws. uvloop only where it builds; asynchat/asyncore left the stdlib in 3.12.
BENCH_SUITE_PEERS = [
    "anyio",
    "twisted",
    "uvloop; sys_platform != 'win32' and platform_python_implementation == 'CPython'",
    "pyasynchat; python_version >= '3.12'",
    "pyasyncore; python_version >= '3.12'",
    "matplotlib",
]


@nox.session
def bench_suite(session: nox.Session) -> None:
    """Every workload against every peer; by default writes the results to the docs.

    ``nox -s bench_suite -- --quick`` for a smoke run (nothing written); any other arguments are
    passed to ``benchmarks/suite/run_suite.py`` instead of ``--write-docs``.
    """
    session.install("-e", ".", *BENCH_SUITE_PEERS)
    session.run("python", "benchmarks/suite/run_suite.py", *(session.posargs or ["--write-docs"]))
