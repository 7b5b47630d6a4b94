"""nox sessions: tests (every supported Python), lint, typecheck, pyright, docs, bench, bench_suite.

``nox`` runs the default sessions; ``nox -s tests`` the test suite on each of PYTHONS this machine
has (``tests-3.12`` for one), skipping the missing ones (an error when the CI variable is set).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

# Every Python trio_chat supports (pyproject.toml's classifiers say the same). The test extra
# brings pyasynchat and pyasyncore where the standard library no longer has them (3.12+).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
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
def pyright(session: nox.Session) -> None:
    """pyright (strict) on the typing user program, and --verifytypes on the package as built.

    The package is installed, not editable: pyright cannot follow setuptools' editable finder.
    .ci/run does the same against the wheel, outside the checkout.
    """
    session.install(".", "pyright")
    session.run("pyright", "tests/typing/user_program.py")
    session.run("pyright", "--verifytypes", "trio_chat", "--ignoreexternal")


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
