"""Malformed RPC traffic against a real server over TCP: refused, logged, nothing changed.

Hypothesis sends arbitrary bytes, well-framed non-requests and requests with
arbitrary params to every method; after each, the job table and the log are
unchanged and a well-formed request on a new connection is still answered.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dcrond.config import Config
from dcrond.errors import DcronError
from dcrond.rpc import RpcClient, RpcServer
from dcrond.service import Service
from dcrond.store._blobs import Blobs
from dcrond.testing._replica import local_replica
from tests.service.test_service import _Engine

leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


class _Target:
    def __init__(self, service: Service, address: tuple[str, int]) -> None:
        self.service = service
        self.address = address

    def state(self) -> tuple[str, int]:
        replica = self.service.replica
        return replica.store.dump(), replica.node.statistics().last_index

    async def raw(self, data: bytes) -> None:
        """Send bytes on a fresh connection and read until the server closes or goes quiet."""
        stream = await trio.open_tcp_stream(*self.address)
        async with stream:
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                return
            with trio.move_on_after(0.05):
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass

    async def call(self, method: str, params: Any) -> Any:
        client = await RpcClient.connect(*self.address)
        outcome: list[Any] = []
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                try:
                    outcome.append(await client.call(method, params))
                except DcronError as exc:
                    outcome.append(exc)
                nursery.cancel_scope.cancel()
        finally:
            await client.aclose()
        if isinstance(outcome[0], DcronError):
            raise outcome[0]
        return outcome[0]


def _against_a_fresh_node(probe: Callable[[_Target], Awaitable[None]]) -> None:
    """Start a node with one job and an RPC server, run ``probe``, then check it still serves.

    A fresh node per example: hypothesis runs examples outside pytest-trio's
    fixtures, so each one gets its own trio run and temporary folder.
    """

    async def main(tmp: Path) -> None:
        blobs = Blobs((tmp / "objects").as_uri())
        async with local_replica(tmp / "node") as replica:
            service = Service(replica, _Engine(), blobs, Config())
            await service.job_create(
                {"name": "keep", "spec": {"schedule": "@daily", "command": "x"}}
            )
            server = RpcServer(service.handlers())
            async with trio.open_nursery() as nursery:
                address = await nursery.start(server.serve_tcp, "127.0.0.1", 0)
                target = _Target(service, address)
                await probe(target)
                assert (await target.call("job.get", {"name": "keep"}))["name"] == "keep"
                nursery.cancel_scope.cancel()

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp))


def _frame(obj: object) -> bytes:
    body: bytes = msgpack.packb(obj)
    return struct.pack(">I", len(body)) + body


_SETTINGS = settings(max_examples=40, deadline=None)


@_SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_change_anything(data: bytes) -> None:
    async def probe(target: _Target) -> None:
        before = target.state()
        await target.raw(data)
        assert target.state() == before

    _against_a_fresh_node(probe)


@_SETTINGS
@given(obj=values)
def test_well_framed_non_requests_are_refused(obj: object) -> None:
    async def probe(target: _Target) -> None:
        before = target.state()
        await target.raw(_frame(obj))
        assert target.state() == before

    _against_a_fresh_node(probe)


_METHODS = [
    "job.create", "job.update", "job.get", "job.delete", "job.pause", "job.resume",
    "job.history", "job.list", "job.next", "run.list", "run.get", "cluster.status",
    "node.list", "raft.propose", "no.such",
]  # fmt: skip
_KEYS = ["name", "spec", "id", "n", "limit", "job", "state", "data", "x"]


@_SETTINGS
@given(
    method=st.sampled_from(_METHODS),
    params=st.dictionaries(st.sampled_from(_KEYS), values, max_size=4),
)
def test_any_params_to_any_method_get_an_answer_and_bad_ones_change_nothing(
    method: str, params: dict[str, Any]
) -> None:
    async def probe(target: _Target) -> None:
        before = target.state()
        try:
            await target.call(method, params)
        except DcronError as exc:
            assert "internal error" not in str(exc), exc  # refused with a reason, not a crash
            assert target.state() == before  # refused: nothing changed

    _against_a_fresh_node(probe)
