import signal
from functools import partial

import trio

import trio_chat


class Shout(trio_chat.AsyncChat):
    def __init__(self, stream: trio.abc.Stream | None = None) -> None:
        super().__init__(stream)
        self.set_terminator(b"\r\n")
        self.pieces: list[bytes] = []

    def collect_incoming_data(self, data: bytes) -> None:
        self.pieces.append(data)

    def found_terminator(self) -> None:
        line = b"".join(self.pieces)
        self.pieces.clear()
        if line == b"QUIT":
            self.push(b"bye\r\n")
            self.close_when_done()
        else:
            self.push(line.upper() + b"\r\n")


async def main(port: int = 7777) -> None:
    # Ctrl-C cancels the server instead of raising KeyboardInterrupt through its nurseries,
    # so the program ends with one line rather than a traceback.
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio_chat.serve_tcp, Shout, port, host="127.0.0.1"))
            async for _ in signals:
                nursery.cancel_scope.cancel()
    print("stopped")


if __name__ == "__main__":
    trio.run(main)
