"""The demo programs that ``python -m trio_chat`` serves, installed with the package.

Each is the one copy of its program: the CLI imports it, the documentation includes it, and the
tests test it.

* :mod:`trio_chat.demos.echo`: a line echo server;
* :mod:`trio_chat.demos.chat_room`: a chat room (``chat``);
* :mod:`trio_chat.demos.http`: an HTTP/1.1 server grown from asynchat's request reader
  (``http``);
* :mod:`trio_chat.demos.tasktree`: the live task tree ``--trace`` prints.

They use trio_chat's public API only, as a program of yours would.
"""
