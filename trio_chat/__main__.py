"""``python -m trio_chat``: the demo servers (the command line is :mod:`trio_chat._cli`)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
