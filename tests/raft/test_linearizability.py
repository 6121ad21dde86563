"""The linearizability checker accepts exactly the histories a single register could produce."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.testing import STALE, Op, Operation, check_history

Span = tuple[float, float | None]


def put(c: str, k: str, v: str, t0: float, t1: float | None) -> Operation:
    return Operation(c, Op.PUT, k, t0, t1, arg=v)


def get(c: str, k: str, t0: float, t1: float | None, result: str | None) -> Operation:
    return Operation(c, Op.GET, k, t0, t1, result=result)


def cas(c: str, k: str, change: tuple[str | None, str], span: Span, ok: bool) -> Operation:
    return Operation(c, Op.CAS, k, span[0], span[1], arg=change[0], arg2=change[1], result=ok)


def test_sequential_put_then_get_is_linearizable() -> None:
    h = [put("a", "x", "1", 0, 1), get("b", "x", 2, 3, "1")]
    assert check_history(h).ok


def test_read_of_missing_key_before_any_write_is_linearizable() -> None:
    assert check_history([get("a", "x", 0, 1, None), put("a", "x", "1", 2, 3)]).ok


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    h = [
        put("a", "x", "1", 0, 1),
        put("a", "x", "2", 2, 3),
        get("b", "x", 4, 5, "1"),
    ]
    r = check_history(h)
    assert not r.ok
    assert r.key == "x"
    assert "get(x)='1'" in r.explanation


def test_read_concurrent_with_write_may_see_old_or_new_value() -> None:
    for seen in ("1", "2"):
        h = [put("a", "x", "1", 0, 1), put("a", "x", "2", 2, 6), get("b", "x", 3, 5, seen)]
        assert check_history(h).ok, seen


def test_value_never_written_is_not_linearizable() -> None:
    h = [put("a", "x", "1", 0, 1), get("b", "x", 2, 3, "9")]
    assert not check_history(h).ok


def test_reads_that_go_back_in_time_are_not_linearizable() -> None:
    # both reads overlap the write, but once one read saw the new value a
    # later (non-overlapping) read may not see the old one
    h = [
        put("a", "x", "1", 0, 1),
        put("a", "x", "2", 2, 10),
        get("b", "x", 3, 4, "2"),
        get("c", "x", 5, 6, "1"),
    ]
    assert not check_history(h).ok


def test_two_concurrent_cas_from_the_same_value_cannot_both_succeed() -> None:
    h = [
        put("a", "x", "0", 0, 1),
        cas("b", "x", ("0", "b"), (2, 5), True),
        cas("c", "x", ("0", "c"), (3, 6), True),
    ]
    assert not check_history(h).ok
    h[2] = cas("c", "x", ("0", "c"), (3, 6), False)
    assert check_history(h).ok


def test_cas_failure_must_be_justified_by_the_value() -> None:
    h = [put("a", "x", "0", 0, 1), cas("b", "x", ("0", "1"), (2, 3), False)]
    assert not check_history(h).ok


def test_write_with_unknown_outcome_may_or_may_not_have_happened() -> None:
    base = [put("a", "x", "1", 0, 1), put("b", "x", "2", 2, None)]
    assert check_history([*base, get("c", "x", 50, 51, "2")]).ok
    assert check_history([*base, get("c", "x", 50, 51, "1")]).ok
    # it may take effect long after its client gave up, but only once:
    seen_then_gone = [
        *base,
        get("c", "x", 50, 51, "2"),
        get("c", "x", 60, 61, "1"),
    ]
    assert not check_history(seen_then_gone).ok


def test_write_with_unknown_outcome_cannot_take_effect_before_it_was_invoked() -> None:
    h = [
        put("a", "x", "1", 0, 1),
        get("c", "x", 2, 3, "2"),
        put("b", "x", "2", 10, None),
    ]
    assert not check_history(h).ok


def test_cas_with_unknown_outcome_is_applied_or_not() -> None:
    base = [put("a", "x", "0", 0, 1), cas("b", "x", ("0", "1"), (2, None), True)]
    assert check_history([*base, get("c", "x", 5, 6, "1")]).ok
    assert check_history([*base, get("c", "x", 5, 6, "0")]).ok


def test_reads_with_unknown_outcome_and_stale_answers_are_ignored() -> None:
    h = [
        put("a", "x", "1", 0, 1),
        get("b", "x", 2, None, "nonsense"),
        Operation("c", Op.PUT, "x", 3, 4, arg="zzz", result=STALE),
        get("d", "x", 5, 6, "1"),
    ]
    r = check_history(h)
    assert r.ok
    assert r.ops_checked == 2


def test_keys_are_checked_independently_and_the_failing_key_is_named() -> None:
    h = [
        put("a", "x", "1", 0, 1),
        put("a", "y", "1", 0, 1),
        get("b", "x", 2, 3, "1"),
        get("b", "y", 2, 3, None),
    ]
    r = check_history(h)
    assert not r.ok
    assert r.key == "y"
    assert r.per_key_ops == {"x": 2, "y": 2}


def _register_history(
    rng: random.Random, clients: int, ops_per_client: int, keys: int, unknown: float
) -> list[Operation]:
    """Clients on a real atomic register: each operation takes effect at one instant."""
    planned: list[tuple[float, float, float | None, str, Op, str, str]] = []
    busy_until = [0.0] * clients
    for n in range(clients * ops_per_client):
        c = rng.randrange(clients)
        t0 = busy_until[c] + rng.random() * 3
        point = t0 + rng.random() * 5
        t1 = point + rng.random() * 5
        busy_until[c] = t1
        lost = rng.random() < unknown
        kind = rng.choice((Op.PUT, Op.GET, Op.CAS))
        planned.append(
            (point, t0, None if lost else t1, f"c{c}", kind, f"k{rng.randrange(keys)}", f"v{n}")
        )
    data: dict[str, str | None] = {}
    out: list[Operation] = []
    for _point, start, end, who, kind, k, v in sorted(planned):
        cur = data.get(k)
        if kind == Op.PUT:
            data[k] = v
            out.append(put(who, k, v, start, end))
        elif kind == Op.GET:
            out.append(get(who, k, start, end, cur))
        else:
            expected = rng.choice([None, *sorted(x for x in data.values() if x)])
            ok = cur == expected
            if ok:
                data[k] = v
            out.append(cas(who, k, (expected, v), (start, end), ok))
    return out


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), clients=st.integers(1, 5), unknown=st.sampled_from([0, 0.1]))
def test_histories_of_a_real_register_are_linearizable(
    seed: int, clients: int, unknown: float
) -> None:
    h = _register_history(random.Random(seed), clients, 12, 2, unknown)
    assert check_history(h).ok


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), clients=st.integers(1, 5))
def test_a_read_of_a_value_nobody_wrote_is_always_caught(seed: int, clients: int) -> None:
    rng = random.Random(seed)
    h = _register_history(rng, clients, 12, 2, 0.1)
    reads = [i for i, o in enumerate(h) if o.op == Op.GET and o.complete is not None]
    if not reads:
        h.append(get("z", "k0", 1e6, 1e6 + 1, "bogus"))
    else:
        o = h[rng.choice(reads)]
        h[h.index(o)] = get(o.client, o.key, o.invoke, o.complete, "bogus")
    assert not check_history(h).ok


def test_a_long_concurrent_history_is_checked_quickly() -> None:
    h = _register_history(random.Random(7), 6, 400, 4, 0.02)
    t = time.perf_counter()
    r = check_history(h)
    elapsed = time.perf_counter() - t
    assert r.ok
    assert r.ops_checked > 2000
    assert elapsed < 5.0
