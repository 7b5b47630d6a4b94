"""Tutorial step 1: an echo server. Every byte a client sends comes straight back.

Run it, then connect from another terminal and type::

    python examples/tutorial/step1_echo.py --port 7000
    nc 127.0.0.1 7000
"""

from __future__ import annotations

from run_server import main

import trio_chat


class Echo(trio_chat.AsyncChat):
    """Sends back whatever arrives, as it arrives."""

    def collect_incoming_data(self, data: bytes) -> None:
        self.push(data)


if __name__ == "__main__":
    main(Echo, "Tutorial step 1: an echo server.")
