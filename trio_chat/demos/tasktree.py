"""The live task tree that ``python -m trio_chat DEMO --trace`` prints.

:class:`TaskTreeTracer` is a ``trio.abc.Instrument``: it notes when tasks start and end, and a
task of its own prints trio's task tree (nurseries and tasks, with what each one is for) at most
a few times a second, so you can watch connections come and go.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import NoReturn

import trio

__all__ = ["TaskTreeTracer"]


# Labels for the tasks that trio names after internal functions, by the end of the task's name.
_ROLES = {
    "<init>": "trio's root task",
    "<TrioToken.run_sync_soon task>": "trio's system task",
    "_serve_one_listener": "accept loop: one per listening socket (trio.serve_listeners)",
    "_run_handler": "connection task: serving, then the handler",
    "log summaries": "serving's log summaries under a flood",
    "_send_loop": "send loop: writes what other tasks pushed, producers, backlog",
}


class TaskTreeTracer(trio.abc.Instrument):
    """Prints trio's live task tree after tasks were spawned or exited (``--trace``).

    The instrument hooks run inside trio's scheduler, so they only note that the tree changed; a
    task of its own (:meth:`run`) prints the tree at most once per *interval* seconds, so a burst
    of connections gives one picture rather than hundreds.

    Args:
        write: called with each picture (several lines, no trailing newline).
        interval: the shortest time between two pictures, in seconds.
    """

    def __init__(self, write: Callable[[str], object], interval: float = 0.2) -> None:
        self._write = write
        self.interval = interval
        self._changed = True
        self._labels: weakref.WeakKeyDictionary[trio.lowlevel.Task, str]
        self._labels = weakref.WeakKeyDictionary()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self._changed = True

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._changed = True

    def label(self, task: trio.lowlevel.Task, text: str) -> None:
        """Show *text* next to *task* in the pictures."""
        self._labels[task] = text

    async def run(self) -> NoReturn:
        """Print the tree whenever it changed, at most once per interval; never returns."""
        self.label(trio.lowlevel.current_task(), "this --trace printer")
        while True:
            await trio.sleep(self.interval)
            if self._changed:
                self._changed = False
                self._write(self.render())

    def render(self) -> str:
        """The current task tree, from trio's root task, as indented text."""
        root = trio.lowlevel.current_root_task()
        assert root is not None
        lines = list(self._task_lines(root, "", ""))
        connections = sum(1 for line in lines if "<- connection" in line)
        title = f"--- task tree: {connections} connection(s) open ---"
        return "\n".join([title, *lines])

    def _task_lines(self, task: trio.lowlevel.Task, first: str, rest: str) -> Iterator[str]:
        note = self._labels.get(task) or next(
            (text for end, text in _ROLES.items() if task.name.endswith(end)), ""
        )
        yield f"{first}{task.name}" + (f"  <- {note}" if note else "")
        nurseries = task.child_nurseries
        for i, nursery in enumerate(nurseries):
            last = i == len(nurseries) - 1
            what = "nursery"
            if task in self._labels and self._labels[task].startswith("connection"):
                what += "  <- AsyncChat.run's: close() cancels it"
            yield f"{rest}{'`-- ' if last else '|-- '}{what}"
            inner = rest + ("    " if last else "|   ")
            children = sorted(nursery.child_tasks, key=lambda t: (t.name, self._labels.get(t, "")))
            for j, child in enumerate(children):
                tail = j == len(children) - 1
                yield from self._task_lines(
                    child,
                    inner + ("`-- " if tail else "|-- "),
                    inner + ("    " if tail else "|   "),
                )
