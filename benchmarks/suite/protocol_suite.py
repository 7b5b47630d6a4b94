"""The protocol workloads of the suite: what is measured, with which client, and the report.

``run_suite.py`` starts each server (``--workload resp|http|smtp``), runs the protocol's check
(``checks.py``), then every figure of the workload through this module's drivers, and stops the
server. A *figure* is one client configuration: ``redis-benchmark -t set -c 50 -P 16``, ``ab -k
-c 50``, 1 MiB messages through ``smtplib``... Each yields the client's throughput and the
server's CPU time per request (``suite_common.cpu_seconds`` before and after the client ran),
which a busy machine disturbs much less than the throughput.

The client tools come from Debian packages; :func:`missing_tools` installs them with apt-get
when it can (root, apt-get present) and otherwise says which workloads must be skipped and why.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from checks import check_resp_benchmark_key
from suite_common import HOST, PROTOCOL_WORKLOADS, cpu_seconds, pin_to_cpu

HERE: Final = Path(__file__).resolve().parent

# redis-benchmark's SET value size (its default); the check after a SET run reads it back.
RESP_DATA_SIZE: Final = 3


class FigureFailedError(Exception):
    """The client failed, timed out, or reported errors."""


@attrs.frozen
class Figure:
    """One measured client configuration of a protocol workload."""

    key: str
    workload: str
    title: str
    unit: str
    full: int  # requests (messages) in a full run
    smoke: int  # ... in a smoke run; a quick run sends a tenth of full
    test: str = ""  # redis-benchmark's test name, the HTTP method
    clients: int = 1
    pipeline: int = 1
    body: int = 0  # bytes of an HTTP POST body or an SMTP message

    def requests(self, size: str) -> int:
        return {"full": self.full, "quick": self.full // 10, "smoke": self.smoke}[size]


def _resp_figures() -> list[Figure]:
    figures = []
    # Full sizes: the slowest server here (about 10 k requests/s without pipelining, 20 k
    # with) takes a few seconds per figure; smoke sizes are a few hundred requests.
    for clients, pipeline, full, smoke in (
        (1, 1, 20_000, 100),
        (50, 1, 50_000, 100),
        (1, 16, 100_000, 160),
        (50, 16, 200_000, 800),
    ):
        for test in ("SET", "GET"):
            title = f"{test}, {clients} client{'s' if clients > 1 else ''}"
            figures.append(
                Figure(
                    f"resp-{test.lower()}-c{clients}-p{pipeline}",
                    "resp",
                    title + (f", -P {pipeline}" if pipeline > 1 else ""),
                    "req/s",
                    full,
                    smoke,
                    test,
                    clients,
                    pipeline,
                )
            )
    return figures


#: In table order.
FIGURES: Final = (
    *_resp_figures(),
    Figure("http-get-c1", "http", "GET, 1 client", "req/s", 10_000, 100, "GET", 1),
    Figure("http-get-c50", "http", "GET, 50 clients", "req/s", 30_000, 200, "GET", 50),
    Figure(
        "http-post-c50",
        "http",
        "POST 1 KiB echo, 50 clients",
        "req/s",
        30_000,
        200,
        "POST",
        50,
        body=1024,
    ),
    Figure("smtp-1k", "smtp", "1 KiB messages", "msg/s", 3_000, 20, body=1024),
    Figure("smtp-1m", "smtp", "1 MiB messages", "msg/s", 100, 3, body=1024 * 1024),
)
FIGURES_BY_KEY: Final = {f.key: f for f in FIGURES}
TITLES: Final = {"resp": "RESP (Redis protocol)", "http": "HTTP/1.1", "smtp": "SMTP"}

# --------------------------------------------------------------------------------------- tools

#: The Debian package of each client tool.
PACKAGES: Final = {"redis-benchmark": "redis-tools", "ab": "apache2-utils"}
#: The client tool each workload needs (SMTP's client is the standard library).
WORKLOAD_TOOLS: Final = {"resp": ("redis-benchmark",), "http": ("ab",), "smtp": ()}
# Installing can take a while on a cold apt cache; it is done once per suite run.
APT_TIMEOUT: Final = 600.0


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=APT_TIMEOUT,
        check=False,
    )


def missing_tools(
    workloads: Sequence[str], *, install: bool, extra: Sequence[str] = ()
) -> dict[str, str]:
    """workload -> why it cannot run, for the workloads whose client tool is missing.

    With *install*, missing tools (and the Debian packages named in *extra*, such as
    ``redis-server``, wanted but not required) are first installed with ``apt-get install -y``
    (``apt-get update`` first if that fails), when running as root where apt-get exists.
    """
    wanted = sorted({t for w in workloads for t in WORKLOAD_TOOLS[w] if shutil.which(t) is None})
    packages = [PACKAGES[t] for t in wanted]
    packages += [p for p in extra if shutil.which(p) is None]
    failure = ""
    if packages and install:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            failure = "not root, or no apt-get: cannot install " + " ".join(packages)
        else:
            print(f"installing {' '.join(packages)} (apt-get)", file=sys.stderr, flush=True)
            try:
                done = _apt_get("install", "-y", "-q", *packages)
                if done.returncode != 0:
                    _apt_get("update", "-q")
                    done = _apt_get("install", "-y", "-q", *packages)
                if done.returncode != 0:
                    failure = f"apt-get install {' '.join(packages)} failed: {done.stderr[-300:]}"
            except subprocess.TimeoutExpired:
                failure = f"apt-get did not finish in {APT_TIMEOUT:g} s"
    elif packages:
        failure = "not installed (and --no-install)"
    missing = {}
    for w in workloads:
        for tool in WORKLOAD_TOOLS[w]:
            if shutil.which(tool) is None:
                reason = failure or "apt-get reported success but it is not on PATH"
                missing[w] = f"{tool} (Debian package {PACKAGES[tool]}) is missing: {reason}"
    return missing


# ------------------------------------------------------------------------------------- drivers


def _pinned(cpu: int) -> Any:
    return (lambda: pin_to_cpu(cpu)) if cpu >= 0 else None


def _run_client(cmd: Sequence[str], server_pid: int, cpu: int, timeout: float) -> tuple[str, float]:
    """Run a client tool to its end; (its stdout, server CPU seconds used meanwhile)."""
    cpu0 = cpu_seconds(server_pid)
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_pinned(cpu),  # the runner starts no threads
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FigureFailedError(f"{cmd[0]} did not finish in {timeout:g} s") from None
    used = cpu_seconds(server_pid) - cpu0
    if done.returncode != 0:
        raise FigureFailedError(
            f"{cmd[0]} exited with status {done.returncode}: {(done.stderr or done.stdout)[-500:]}"
        )
    return done.stdout, used


def run_redis_benchmark(
    figure: Figure, port: int, server_pid: int, requests: int, cpu: int, timeout: float
) -> dict[str, Any]:
    cmd = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", figure.test.lower()]
    cmd += ["-c", str(figure.clients), "-n", str(requests), "-P", str(figure.pipeline)]
    cmd += ["-d", str(RESP_DATA_SIZE), "--csv"]
    t0 = time.perf_counter()
    out, used = _run_client(cmd, server_pid, cpu, timeout)
    elapsed = time.perf_counter() - t0
    match = re.search(rf'^"{figure.test}","([0-9.]+|inf)"', out, re.MULTILINE)
    if match is None:
        raise FigureFailedError(
            f"no {figure.test} figure in redis-benchmark's output: {out!r:.300}"
        )
    # redis-benchmark times with a millisecond clock: a tiny run (a smoke test's) can take
    # "0 ms" and report inf; the wall-clock time of the whole client run stands in for it.
    rps = float(match[1]) if match[1] != "inf" else requests / elapsed
    if figure.test == "SET":
        check_resp_benchmark_key(port, timeout, RESP_DATA_SIZE)
    return {"value": rps, "cpu_us": used / requests * 1e6, "requests": requests}


AB_FIELDS: Final = {
    "complete": r"^Complete requests:\s+(\d+)",
    "failed": r"^Failed requests:\s+(\d+)",
    "keep_alive": r"^Keep-Alive requests:\s+(\d+)",
    "rps": r"^Requests per second:\s+([0-9.]+)",
}


def run_ab(
    figure: Figure, port: int, server_pid: int, requests: int, cpu: int, timeout: float
) -> dict[str, Any]:
    cmd = ["ab", "-k", "-q", "-n", str(requests), "-c", str(figure.clients)]
    cmd += ["-s", str(max(1, int(timeout)))]
    with tempfile.NamedTemporaryFile(prefix="bench-body-") as body:
        if figure.test == "POST":
            body.write(bytes(range(256)) * (figure.body // 256))
            body.flush()
            cmd += ["-p", body.name, "-T", "application/octet-stream"]
        cmd.append(f"http://{HOST}:{port}/bench")
        out, used = _run_client(cmd, server_pid, cpu, timeout)
    found = {k: re.search(p, out, re.MULTILINE) for k, p in AB_FIELDS.items()}
    if None in found.values():
        raise FigureFailedError(f"unexpected ab output: {out[-500:]!r}")
    numbers = {k: float(m[1]) for k, m in found.items() if m is not None}
    problems = []
    if numbers["complete"] != requests or numbers["failed"]:
        problems.append(f"{numbers['failed']:.0f} of {numbers['complete']:.0f} requests failed")
    if numbers["keep_alive"] != requests:
        problems.append(f"only {numbers['keep_alive']:.0f} of {requests} were kept alive")
    if "Non-2xx responses" in out:
        problems.append("some responses were not 2xx")
    if problems:
        raise FigureFailedError("ab: " + "; ".join(problems))
    return {"value": numbers["rps"], "cpu_us": used / requests * 1e6, "requests": requests}


def run_smtp(
    figure: Figure, port: int, server_pid: int, requests: int, cpu: int, timeout: float
) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--workload", "smtp", "--port", str(port)]
    cmd += ["--body-size", str(figure.body), "--count", str(requests)]
    cmd += ["--server-pid", str(server_pid), "--cpu", str(cpu), "--timeout", str(timeout)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise FigureFailedError(f"the SMTP client did not finish in {timeout:g} s") from None
    if done.returncode != 0:
        raise FigureFailedError(done.stderr.strip()[-500:])
    result: dict[str, Any] = json.loads(done.stdout)
    return {"value": result["value"], "cpu_us": result["cpu_us"], "requests": requests}


DRIVERS: Final = {"resp": run_redis_benchmark, "http": run_ab, "smtp": run_smtp}


def run_figure(
    figure: Figure, port: int, server_pid: int, size: str, cpu: int, timeout: float
) -> dict[str, Any]:
    """Drive the server through one figure; ``{"value", "cpu_us", "requests"}``."""
    driver = DRIVERS[figure.workload]
    return driver(figure, port, server_pid, figure.requests(size), cpu, timeout)


# -------------------------------------------------------------------------------------- report

#: Column headings (the servers' short names).
SHORT: Final = {
    "trio_chat": "AsyncChat",
    "trio_chat_framed": "FramedStream",
    "raw_trio": "raw trio",
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "twisted": "Twisted",
    "asynchat": "asynchat",
    "redis_server": "redis-server",
}
RAW: Final = "raw_trio"
CHAT: Final = "trio_chat"


def new_results(
    size: str, runs: int, cpu: int, workloads: Sequence[str], applies: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """An empty results record; *applies*: server -> the protocol workloads it implements."""
    figures = [f.key for f in FIGURES if f.workload in workloads]
    servers = list(applies)
    return {
        "size": size,
        "runs": runs,
        "cpu": cpu,
        "servers": servers,
        "applies": {s: list(w) for s, w in applies.items()},
        "figures": figures,
        "values": {f: {s: [] for s in servers} for f in figures},
        "cpu_us": {f: {s: [] for s in servers} for f in figures},
        "skipped": {},
        "failed": {},
    }


def _median(results: dict[str, Any], what: str, figure: str, server: str) -> float | None:
    values = results[what].get(figure, {}).get(server) or []
    return statistics.median(values) if values else None


def fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e4:
        return f"{value / 1e3:.1f} k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def fmt_cpu(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def rst_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [rule, line(header), rule, *(line(r) for r in rows), rule]


def _measured(results: dict[str, Any]) -> tuple[list[Figure], list[str]]:
    """The figures with at least one value, and the servers (in table order) with one."""
    figures = [FIGURES_BY_KEY[f] for f in results["figures"] if any(results["values"][f].values())]
    servers = [
        s
        for s in SHORT
        if s in results["servers"] and any(results["values"][f.key].get(s) for f in figures)
    ]
    return figures, servers


def _missing(results: dict[str, Any], figure: Figure, server: str) -> str:
    if figure.workload not in results["applies"].get(server, PROTOCOL_WORKLOADS):
        return "n/a"
    if f"{server} {figure.workload}" in results["skipped"] or figure.workload in results["skipped"]:
        return "skipped"
    return "failed"


def tables(results: dict[str, Any]) -> dict[str, list[str]]:
    """The report's tables (figures down, servers across): ``rate``, ``cpu``, ``vs_raw``,
    ``vs_chat``."""
    figures, servers = _measured(results)
    header = ["workload", *(SHORT[s] for s in servers)]
    out: dict[str, list[str]] = {}
    for kind in ("rate", "cpu", "vs_raw", "vs_chat"):
        rows = []
        for f in figures:
            cells = [f"{TITLES[f.workload].split(' ')[0]} {f.title}"]
            for s in servers:
                rate = _median(results, "values", f.key, s)
                cpu = _median(results, "cpu_us", f.key, s)
                if rate is None or cpu is None:
                    cells.append(_missing(results, f, s) if kind in ("rate", "cpu") else "")
                elif kind == "rate":
                    cells.append(fmt_rate(rate))
                elif kind == "cpu":
                    cells.append(fmt_cpu(cpu))
                else:
                    ref = RAW if kind == "vs_raw" else CHAT
                    ref_rate = _median(results, "values", f.key, ref)
                    ref_cpu = _median(results, "cpu_us", f.key, ref)
                    if ref_rate and ref_cpu:
                        cells.append(f"{rate / ref_rate:.2f}x / {cpu / ref_cpu:.2f}x")
                    else:
                        cells.append("")
            rows.append(cells)
        out[kind] = rst_table(header, rows)
    return out


def spread(results: dict[str, Any]) -> str:
    """Per workload, the largest max/min ratio of one server's runs (throughput, then CPU)."""
    parts = []
    for w in PROTOCOL_WORKLOADS:
        worst = {"values": 1.0, "cpu_us": 1.0}
        for what in worst:
            for f in FIGURES:
                if f.workload != w:
                    continue
                for v in results[what].get(f.key, {}).values():
                    if len(v) > 1 and min(v) > 0:
                        worst[what] = max(worst[what], max(v) / min(v))
        if any(
            len(v) > 1
            for f in FIGURES
            if f.workload == w
            for v in results["values"][f.key].values()
        ):
            parts.append(f"{w} {worst['values']:.2f}x (CPU {worst['cpu_us']:.2f}x)")
    return ", ".join(parts)


def chart(results: dict[str, Any], path: Path) -> None:
    """One horizontal bar chart per figure: the server's CPU time per request (the figure that
    a busy machine disturbs least), labelled with the client's throughput."""
    plt: Any = importlib.import_module("matplotlib.pyplot")
    figures, servers = _measured(results)
    cols = 4
    rows = (len(figures) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(16, 3.0 * rows), squeeze=False)
    colors = {
        "trio_chat": "#d62728",
        "trio_chat_framed": "#ff7f0e",
        "raw_trio": "#7f7f7f",
        "redis_server": "#2ca02c",
    }
    for ax, f in zip(axes.flat, figures, strict=False):
        present = [s for s in servers if _median(results, "cpu_us", f.key, s) is not None]
        cpu = [_median(results, "cpu_us", f.key, s) or 0.0 for s in present]
        rates = [_median(results, "values", f.key, s) or 0.0 for s in present]
        bars = ax.barh(
            [SHORT[s] for s in present],
            cpu,
            color=[colors.get(s, "#1f77b4") for s in present],
        )
        labels = [f"{fmt_cpu(c)} us, {fmt_rate(r)}/s" for c, r in zip(cpu, rates, strict=True)]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
        ax.invert_yaxis()
        ax.margins(x=0.5)
        per = "message" if f.workload == "smtp" else "request"
        ax.set_title(
            f"{TITLES[f.workload]}: {f.title}\nserver CPU us per {per} (lower is better)",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(figures) :]:
        ax.axis("off")
    m = results["machine"]
    fig.suptitle(
        f"trio_chat protocol benchmarks (real clients): medians of {results['runs']} runs, "
        f"{m['python']}, trio {m['versions']['trio']}, trio_chat at {results.get('commit', '?')}, "
        f"{m['cpu']}; labels: CPU per request, then the client's throughput",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


BEGIN: Final = (
    ".. begin bench_protocols (generated by benchmarks/suite/run_suite.py, do not edit by hand)"
)
END: Final = ".. end bench_protocols"


def _wrap(paragraph: str, indent: str = "") -> list[str]:
    return textwrap.wrap(paragraph, 100, subsequent_indent=indent, break_on_hyphens=False)


def section(results: dict[str, Any], chart_path: str) -> list[str]:
    """The docs section (between :data:`BEGIN` and :data:`END`)."""
    m = results["machine"]
    v = m["versions"]
    t = tables(results)
    cpu = results["cpu"]
    pinned = f"both pinned to CPU {cpu}" if cpu >= 0 else "not pinned"
    size = results["size"]
    counts = "; ".join(
        f"{w.upper()} "
        + ", ".join(
            dict.fromkeys(
                f"{f.requests(size):,} ({f.title.removeprefix(f.test + ', ')})"
                for f in FIGURES
                if f.workload == w and f.key in results["figures"]
            )
        )
        for w in PROTOCOL_WORKLOADS
        if any(f.workload == w and f.key in results["figures"] for f in FIGURES)
    )
    notes = [
        f"* ``{key}``: {reason.strip().splitlines()[0] if reason.strip() else '?'}"
        for key, reason in sorted({**results["skipped"], **results["failed"]}.items())
    ]
    out = [
        BEGIN,
        "",
        "Real protocols, real clients",
        "----------------------------",
        "",
        *_wrap(
            "The uniform workloads above keep one terminator for a whole connection. Real "
            "protocols switch terminators on almost every frame, and their users measure servers "
            "with their own tools, so ``run_suite.py --workloads resp,http,smtp`` runs three "
            "protocols, each written idiomatically for every peer, with the same parsing rules, "
            "replies and store (``benchmarks/suite/protocols.py``), driven by real clients:"
        ),
        "",
        *_wrap(
            "* **RESP** (the Redis protocol: inline commands and ``*N`` / ``$len`` arrays; PING, "
            "ECHO, SET, GET, DEL, INCR) driven by ``redis-benchmark -t set|get`` with 1 and 50 "
            "clients, without and with ``-P 16`` (16 pipelined requests per client), 3-byte "
            "values; ``redis-server`` itself is the roof;",
            "  ",
        ),
        *_wrap(
            '* **HTTP/1.1** (a head ending with ``b"\\r\\n\\r\\n"``, a Content-Length body '
            "read with a count, keep-alive) driven by ``ab -k``: GET with 1 and 50 clients, and "
            "a 1 KiB POST body echoed back;",
            "  ",
        ),
        *_wrap(
            '* **SMTP** (commands, then a DATA body ending with ``b"\\r\\n.\\r\\n"``, '
            "dot-unstuffed and answered with its length and CRC-32) driven by ``smtplib`` from a "
            "client process: one connection, 1 KiB and 1 MiB messages.",
            "  ",
        ),
        "",
        *_wrap(
            "Servers: trio_chat ``AsyncChat`` with asynchat-style hooks "
            '(``benchmarks/suite/asynchat_hooks.py``: ``set_terminator(b"\\r\\n")`` for '
            "lines and headers, an int terminator for each RESP bulk string and HTTP body, "
            '``b"\\r\\n.\\r\\n"`` for an SMTP message; the *same code* runs on stdlib '
            "asynchat); trio_chat ``FramedStream`` (``receive_until`` per line or head, "
            "``receive_exactly`` per counted part, replies sent when nothing more is buffered); "
            "raw trio (``receive_some``, a ``bytes.find`` parser over each read, one "
            "``send_all`` per read); asyncio streams (``readuntil`` / ``readexactly``, "
            "``write`` + ``drain`` per reply) on the default loop and on uvloop; Twisted "
            "(``LineReceiver`` with its ``delimiter`` switched, ``setRawMode`` for counted "
            "parts); stdlib asynchat; redis-server."
        ),
        "",
        *_wrap(
            "Every run starts the server, checks it (``benchmarks/suite/checks.py``: every "
            "command, pipelined and byte-by-byte input, values containing the delimiters, values "
            "over many reads, protocol errors; HTTP bodies echoed; SMTP messages intact), then "
            "runs each figure; after each ``SET`` run a ``GET`` must return redis-benchmark's "
            "value, ``ab`` must report every request complete, kept alive and 2xx, and "
            "``smtplib`` checks every message's length and CRC-32. Requests (messages) per client "
            f"run: {counts}; every client run is also bounded in time."
        ),
        "",
        *_wrap(
            f"Machine: {m['cpu']}, {m['cpus']} CPUs (a shared virtual machine), {m['system']}; "
            f"{m['python']}, trio {v['trio']}, trio_chat {v['trio-chat']} at commit "
            f"``{results.get('commit', '?')}``, Twisted {v['Twisted']}, uvloop {v['uvloop']}, "
            f"{results.get('tools', '')}; run on {m['date']}; server and client {pinned}; "
            f"medians of {results['runs']} runs (``--size {size}``)."
        ),
        "",
        *_wrap("Throughput (requests/s; messages/s for SMTP), as the client reports it:"),
        "",
        *t["rate"],
        "",
        *_wrap(
            "Server CPU time per request (microseconds; per message for SMTP), from "
            "``/proc/<pid>/task/*/schedstat`` before and after each client run. Client and "
            "server share one CPU, so throughput also pays for the client; this figure is the "
            "server's alone, and it moves much less than throughput when the machine is busy "
            "(compare the spreads below):"
        ),
        "",
        *t["cpu"],
        "",
        *_wrap(
            "Ratio to raw trio: throughput ratio (above 1.00x faster than raw trio), then CPU "
            "per request ratio (above 1.00x costs more CPU than raw trio):"
        ),
        "",
        *t["vs_raw"],
        "",
        *_wrap("Ratio to trio_chat ``AsyncChat``, read the same way:"),
        "",
        *t["vs_chat"],
        "",
    ]
    if results["runs"] > 1:
        out += [
            *_wrap(
                "Run-to-run spread (per protocol, the largest ratio of one server's highest to "
                f"lowest run): {spread(results)}."
            ),
            "",
        ]
    if notes:
        out += ["Not measured:", "", *(line for n in notes for line in _wrap(n, "  ")), ""]
    out += [
        f".. image:: {chart_path}",
        "   :alt: Bar charts of the server CPU time per request for each protocol workload and"
        " server",
        "",
        END,
    ]
    return out


def write_section(page: Path, lines: Sequence[str], before: str) -> None:
    """Replace the section between the markers in *page*; the first time, insert it before the
    line *before* (or at the end)."""
    text = page.read_text(encoding="utf-8")
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    elif before in text:
        head, tail = text.split(before, 1)
        text = head + block + "\n\n" + before + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(text, encoding="utf-8")
