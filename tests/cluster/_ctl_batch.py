"""Many dcronctl commands from one process: ``python -m tests.cluster._ctl_batch FILE``.

FILE holds a JSON list of argument lists, each what one would pass to
``dcronctl``. They run one after the other through ``dcrond.ctl.main`` (the
same code as the ``dcronctl`` command, each with its own connection) inside
this process, so a test that creates or pauses fifty jobs pays Python's
start-up once instead of fifty times (about 0.5 s each on a loaded 2-core
machine). Prints one JSON list: for each command ``{"argv", "rc",
"start", "end", "stdout", "stderr"}`` (start and end in UTC epoch seconds).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time

from dcrond.ctl import main as dcronctl


def run_all(commands: list[list[str]]) -> list[dict[str, object]]:
    """Run each command through dcronctl's ``main``; what each printed and returned."""
    results: list[dict[str, object]] = []
    for argv in commands:
        out, err = io.StringIO(), io.StringIO()
        start = time.time()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = dcronctl(argv)
            except SystemExit as exc:  # argparse's usage errors
                rc = exc.code if isinstance(exc.code, int) else 2
        results.append(
            {
                "argv": argv,
                "rc": rc,
                "start": start,
                "end": time.time(),
                "stdout": out.getvalue(),
                "stderr": err.getvalue(),
            }
        )
    return results


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        commands = json.load(f)
    json.dump(run_all(commands), sys.stdout)


if __name__ == "__main__":
    main()
