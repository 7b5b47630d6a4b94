"""Smoke test of the benchmark suite (``benchmarks/suite``): correctness only, never timings.

Runs the suite's smallest configuration (``--size smoke``: a few thousand frames per workload,
50 idle connections) against the trio_chat and raw-trio servers only, as subprocesses bounded by
subprocess timeouts. The load generator checks every count the servers report, so a run passes
only if each server framed every line and message correctly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite"
WORKLOADS = ["W0", "W1", "W2", "W3", "W4", "W5", "W6"]
SERVERS = ["trio_chat", "raw_trio"]


def test_smoke_run_counts_match(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(SUITE / "run_suite.py"), "--size", "smoke", "--runs", "1"]
    cmd += ["--servers", ",".join(SERVERS), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["failed"] == {}
    assert results["skipped"] == {}
    assert sorted(results["values"]) == WORKLOADS
    for workload, per_server in results["values"].items():
        assert sorted(per_server) == sorted(SERVERS), workload
        for server, values in per_server.items():
            assert len(values) == 1, (workload, server)
    for detail in results["details"]["W6"].values():
        assert detail[0]["rss_after_kib"] > 0


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
