"""The chat room, run from a checkout: ``python examples/chat_room.py --port 7000``.

The program is ``trio_chat/demos/chat_room.py`` (``python -m trio_chat.demos.chat_room`` runs
it too, and ``python -m trio_chat chat`` serves the same room).
"""

import sys

from trio_chat.demos.chat_room import run

if __name__ == "__main__":
    sys.exit(run())
