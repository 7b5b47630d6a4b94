"""Smoke tests of the benchmark suite (``benchmarks/suite``): correctness only, never timings.

Runs the suite's smallest configuration (``--size smoke``: a few thousand frames per workload,
50 idle connections; a few hundred requests per protocol figure) against the trio_chat and
raw-trio servers only, as subprocesses bounded by subprocess timeouts. The load generator checks
every count the servers report, and every protocol run starts with ``checks.py``, so a run passes
only if each server framed every line, message and request correctly.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite"
WORKLOADS = ["W0", "W1", "W2", "W3", "W4", "W5", "W6"]
SERVERS = ["trio_chat", "raw_trio"]
PROTOCOL_SERVERS = ["trio_chat", "trio_chat_framed", "raw_trio"]
# The client tool each protocol workload needs (SMTP's, smtplib, is always there).
TOOLS = {"resp": "redis-benchmark", "http": "ab", "smtp": None}


@pytest.mark.heavy
def test_smoke_run_counts_match(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(SUITE / "run_suite.py"), "--size", "smoke", "--runs", "1"]
    cmd += ["--servers", ",".join(SERVERS), "--workloads", ",".join(WORKLOADS)]
    cmd += ["--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    both = json.loads(out.read_text(encoding="utf-8"))
    assert both["protocols"] is None
    results = both["uniform"]
    assert results["failed"] == {}
    assert results["skipped"] == {}
    assert sorted(results["values"]) == WORKLOADS
    for workload, per_server in results["values"].items():
        assert sorted(per_server) == sorted(SERVERS), workload
        for server, values in per_server.items():
            assert len(values) == 1, (workload, server)
    for detail in results["details"]["W6"].values():
        assert detail[0]["rss_after_kib"] > 0


@pytest.mark.parametrize("workload", ["resp", "http", "smtp"])
@pytest.mark.heavy
def test_protocol_workload_runs_end_to_end(workload: str, tmp_path: Path) -> None:
    """Check, then every figure of the workload, with a real client, against each server."""
    tool = TOOLS[workload]
    if tool is not None and shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install redis-tools apache2-utils)")
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(SUITE / "run_suite.py"), "--size", "smoke", "--runs", "1"]
    cmd += ["--servers", ",".join(PROTOCOL_SERVERS), "--workloads", workload, "--no-install"]
    cmd += ["--cpu", "-1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    both = json.loads(out.read_text(encoding="utf-8"))
    assert both["uniform"] is None
    results = both["protocols"]
    assert results["failed"] == {}
    assert results["skipped"] == {}
    assert results["figures"], "no figures for " + workload
    for figure in results["figures"]:
        assert figure.startswith(workload + "-")
        for server in PROTOCOL_SERVERS:
            assert len(results["values"][figure][server]) == 1, (figure, server)
            assert results["values"][figure][server][0] > 0
            assert results["cpu_us"][figure][server][0] >= 0
    assert "AsyncChat" in done.stdout  # the tables were printed


def serve_in_thread(answer: Callable[[bytes], bytes]) -> tuple[int, threading.Thread]:
    """A one-connection server: each read is answered with ``answer(data)``."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one() -> None:
        with listener:
            listener.settimeout(10)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                try:
                    while data := conn.recv(65536):
                        conn.sendall(answer(data))
                except OSError:
                    pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    return port, thread


def run_check(workload: str, port: int) -> subprocess.CompletedProcess[str]:
    code = f"import checks; checks.CHECKS[{workload!r}]({port}, 5.0)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=SUITE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("workload", "answer", "message"),
    [
        # A RESP server that answers everything with +PONG: wrong from the second command on.
        ("resp", lambda data: b"+PONG\r\n" * data.count(b"\r\n"), r"reply to b'\*2"),
        # An HTTP server that answers every request with the same empty response: POST bodies
        # are not echoed.
        (
            "http",
            lambda data: (
                b"HTTP/1.1 200 OK\r\nContent-Length: 25\r\n\r\n" + b"hello from the benchmark\n"
            ),
            "body of the response",
        ),
    ],
)
def test_checks_reject_a_wrong_server(
    workload: str, answer: Callable[[bytes], bytes], message: str
) -> None:
    """The protocol checks fail a server whose replies are wrong (they can fail)."""
    port, thread = serve_in_thread(answer)
    done = run_check(workload, port)
    thread.join(10)
    assert done.returncode != 0
    assert "CheckFailedError" in done.stderr
    assert re.search(message, done.stderr), done.stderr


def test_loadgen_rejects_a_wrong_count() -> None:
    """A server that reports the wrong number of lines fails the run."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_one() -> None:
            conn, _ = listener.accept()
            with conn:
                while conn.recv(65536):
                    pass
                conn.sendall(b"1 31\n")  # one line, though many were sent

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        cmd = [sys.executable, str(SUITE / "loadgen.py"), "--workload", "W1"]
        cmd += ["--port", str(port), "--count", "1000", "--timeout", "10"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        thread.join(10)
    assert done.returncode == 1
    assert "server counted 1 lines, expected 1,000" in done.stderr
