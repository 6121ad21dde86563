"""Output: capped with a trailer, byte-exact, in arrival order, followable while the job runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dcrond.errors import NotFound
from dcrond.runner import LocalProcessRunner, Outcome, RunHandle, RunSpec


async def test_output_over_the_cap_is_dropped_counted_and_noted_in_a_trailer(
    runner: LocalProcessRunner,
) -> None:
    spec = RunSpec("chatty@1", command="head -c 300000 /dev/zero | tr '\\0' x", output_cap=1000)
    with trio.fail_after(10):
        res = await runner.run(spec)
    assert res.state is Outcome.SUCCEEDED  # the job never blocked on a full pipe
    assert res.truncated
    assert (res.output_bytes, res.discarded_bytes) == (1000, 299_000)
    data = res.spool_path.read_bytes()
    assert data[:1000] == b"x" * 1000
    assert data[1000:] == b"\n[dcrond: output truncated after 1000 bytes; 299000 bytes discarded]\n"


async def test_output_at_the_cap_exactly_is_not_truncated(runner: LocalProcessRunner) -> None:
    with trio.fail_after(10):
        res = await runner.run(RunSpec("exact@1", command="printf 12345", output_cap=5))
    assert not res.truncated and res.spool_path.read_bytes() == b"12345"


async def test_non_utf8_output_is_kept_byte_exact(runner: LocalProcessRunner) -> None:
    raw = b"\xff\xfe\x00caf\xc3\xa9 \xe9t\xe9 \x80\x81\n\xc3"
    octal = "".join(f"\\{b:03o}" for b in raw)
    with trio.fail_after(10):
        res = await runner.run(RunSpec("latin1@1", command=f"printf '{octal}'"))
    assert res.state is Outcome.SUCCEEDED
    assert res.spool_path.read_bytes() == raw
    assert res.spool_path.read_bytes().decode(errors="replace").startswith("\ufffd\ufffd\x00café")


async def test_stdout_and_stderr_are_interleaved_in_arrival_order(
    runner: LocalProcessRunner,
) -> None:
    cmd = "for i in 1 2 3; do echo out$i; echo err$i >&2; done"
    with trio.fail_after(10):
        res = await runner.run(RunSpec("mixed@1", command=cmd))
    assert res.spool_path.read_bytes() == b"out1\nerr1\nout2\nerr2\nout3\nerr3\n"


async def test_follow_yields_output_while_the_job_is_still_running(
    runner: LocalProcessRunner, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    cmd = f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second"
    seen: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle: RunHandle = await nursery.start(runner.run, RunSpec("live@1", command=cmd))
            async for chunk in runner.follow("live@1", 1):
                seen.append(chunk)
                if b"first" in b"".join(seen) and not gate.exists():
                    # the job is blocked until the gate opens: this output came live
                    assert runner.statistics().running == 1
                    gate.touch()
    assert b"".join(seen) == b"first\nsecond\n"
    assert handle.spool_path.read_bytes() == b"first\nsecond\n"


async def test_follow_of_a_finished_attempt_reads_from_an_offset_and_ends(
    runner: LocalProcessRunner,
) -> None:
    with trio.fail_after(10):
        await runner.run(RunSpec("done@1", command="echo abcdef"))
        chunks = [c async for c in runner.follow("done@1", 1, offset=3)]
    assert b"".join(chunks) == b"def\n"


async def test_follow_includes_the_truncation_trailer(runner: LocalProcessRunner) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            spec = RunSpec("cap@1", command="echo 0123456789", output_cap=4)
            await nursery.start(runner.run, spec)
            chunks = [c async for c in runner.follow("cap@1", 1)]
    trailer = b"[dcrond: output truncated after 4 bytes; 7 bytes discarded]\n"
    assert b"".join(chunks) == b"0123\n" + trailer


def test_follow_of_an_unknown_attempt_is_not_found(runner: LocalProcessRunner) -> None:
    with pytest.raises(NotFound):
        runner.follow("never@1", 1)
