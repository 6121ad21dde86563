"""Readable Raft scenarios: every tests/raft/testdata/*.txt file must replay exactly.

Each file is a list of commands with the output they are expected to print
(see ``dcrond.testing._transcript``). Run with ``REWRITE=1`` to write the
actual output back into the files, then review the diff.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from dcrond.testing._transcript import run_transcript

TESTDATA = Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


def test_there_are_transcripts_for_every_topic() -> None:
    assert len(FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_transcript_replays_exactly(path: Path) -> None:
    expected = path.read_text()
    actual = run_transcript(expected)
    if actual != expected and os.environ.get("REWRITE") == "1":
        path.write_text(actual)
        return
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            str(path),
            "actual",
        )
    )
    assert actual == expected, f"transcript differs (REWRITE=1 to accept):\n{diff}"
