"""CI: ``pyright --verifytypes trio_chat`` on the installed package, judged per symbol.

The library (``trio_chat``, ``trio_chat.testing``) must be fully typed: any error there fails.
The demo programs (``trio_chat.demos``, ``trio_chat.__main__``) are public modules to pyright
but no names users build on: their findings are listed, and do not fail the run.
Run by .ci/run with the wheel venv's Python, pyright on PATH.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROGRAMS = ("trio_chat.demos", "trio_chat.__main__")


def main() -> int:
    done = subprocess.run(
        ["pyright", "--verifytypes", "trio_chat", "--ignoreexternal", "--outputjson"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(done.stdout)["typeCompleteness"]
    except (ValueError, KeyError):
        print(done.stdout, done.stderr, sep="\n")
        return 1
    library: list[str] = []
    programs: list[str] = []
    for symbol in report["symbols"]:
        name = symbol["name"]
        for diagnostic in symbol["diagnostics"]:
            if diagnostic["severity"] != "error":
                continue
            message = diagnostic["message"].replace("\n", "\n      ")
            line = f"{name}: {message}"
            is_program = any(name == p or name.startswith(p + ".") for p in PROGRAMS)
            (programs if is_program else library).append(line)
    print(f"pyright --verifytypes: completeness {report['completenessScore']:.1%}")
    if programs:
        print(f"\n{len(programs)} finding(s) in the demo programs (reported, not failing):")
        print("\n".join(f"  {line}" for line in programs))
    if library:
        print(f"\n{len(library)} error(s) in the library (failing):")
        print("\n".join(f"  {line}" for line in library))
        return 1
    print("the library (trio_chat, trio_chat.testing): no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
