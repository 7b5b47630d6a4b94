"""CI: trio_chat as a user installed it, run by .ci/run with a clean venv outside the checkout.

Checks the installed distribution (where it was imported from, its metadata, LICENSE and
py.typed), then runs the echo demo (``python -m trio_chat echo --port 0``) and talks to it over
a plain socket: connect, send a line, read the echo, stop the server with SIGTERM.
Standard library only: nothing here may come from the checkout.
"""

from __future__ import annotations

import importlib.metadata
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

TIMEOUT = 20.0  # seconds for the demo to start, answer, or stop


def check_distribution() -> None:
    import trio_chat

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(trio_chat.__file__).resolve()
    assert site in where.parents, f"trio_chat imported from {where}, not from {site}"
    assert (where.parent / "py.typed").is_file(), "py.typed is missing from the wheel"

    dist = importlib.metadata.distribution("trio-chat")
    meta = dist.metadata
    assert meta["Version"] == trio_chat.__version__, (meta["Version"], trio_chat.__version__)
    assert meta["License-Expression"] == "MIT", meta["License-Expression"]
    licenses = [f for f in dist.files or [] if f.name == "LICENSE"]
    assert licenses, "no LICENSE in the wheel's metadata directory"
    assert "MIT License" in licenses[0].read_text(encoding="utf-8")
    classifiers = set(meta.get_all("Classifier") or [])
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers, minor
    assert meta.get_all("Project-URL"), "no project URLs"
    print(f"installed: trio_chat {trio_chat.__version__} from {where.parent}")


def run_echo_demo() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_chat", "echo", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The banner names the address: "... on 127.0.0.1:PORT; connect with: nc 127.0.0.1 PORT".
    banner: list[str] = []

    def read_banner() -> None:
        assert server.stdout is not None
        banner.append(server.stdout.readline())

    reader = threading.Thread(target=read_banner, daemon=True)
    reader.start()
    reader.join(TIMEOUT)
    try:
        match = re.search(r"127\.0\.0\.1:(\d+)", banner[0] if banner else "")
        assert match, f"no address in the demo's banner: {banner!r}"
        print(f"demo: {banner[0].strip()}")
        with socket.create_connection(("127.0.0.1", int(match[1])), timeout=TIMEOUT) as client:
            client.sendall(b"hello from the wheel\n")
            echo = b""
            while not echo.endswith(b"\n"):
                data = client.recv(1024)
                assert data, f"the demo closed the connection after {echo!r}"
                echo += data
        assert echo == b"hello from the wheel\n", echo
        print(f"echo: {echo!r}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            out, err = server.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
            raise AssertionError(f"the demo did not stop on SIGTERM: {out!r} {err!r}") from None
    assert server.returncode == 0, (server.returncode, out, err)
    assert "Traceback" not in err, err
    assert "stopped; served 1 connection(s)" in out, out
    print(f"demo stopped on SIGTERM with exit code 0: {out.strip().splitlines()[-1]}")


if __name__ == "__main__":
    check_distribution()
    run_echo_demo()
    print("wheel smoke test: OK")
