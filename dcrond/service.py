"""The RPC surface of a node: what ``dcronctl`` (and later the HTTP API) call.

Theory of operation
-------------------
Each method takes a params map and returns plain JSON-able values (the
objects docs/jobs.md describes). Writes build a ``dcrond.store`` command,
check it against this node's copy of the table (``precheck``: a clear error
without a log write for the common mistakes), and go through the one write
path, ``Replica.propose``; what the store answers is unwrapped into the value
or the error the client sees. Reads wait for a read barrier first, so a
client never reads older data than it has already been told about
(linearizable), unless it asks for ``stale``.

Scripts arrive as bytes, or as ``script_url``, an object already in the
cluster's storage that the service reads here: either way it checks the
size against ``[jobs] max_script_bytes``, stores the bytes in object storage
by sha256 *before* proposing, and the job version pins that hash. Runs are started, killed and
read through the engine, which owns processes and logs.

Every parameter is checked here (type, presence, no unknown keys): a
malformed request is refused with ``InvalidRequest`` naming the field, and
changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from dcrond import __version__
from dcrond.cluster import ClusterRuntime
from dcrond.config import Config
from dcrond.errors import InvalidRequest, StorageError
from dcrond.replica import Replica
from dcrond.store import (
    CreateJob,
    DeleteJob,
    JobSpec,
    PauseJob,
    ResumeJob,
    Script,
    UpdateJob,
    format_instant,
    unwrap,
)
from dcrond.store._blobs import Blobs
from dcrond.store._commands import Batch, decode_entry
from dcrond.store._results import encode_result, rejected_from

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

#: the longest a ``run.logs`` call waits for new output before answering empty
LOG_POLL_SECONDS = 1.0


class RunEngine(Protocol):
    """What the service needs of the engine (``dcrond.engine.Engine``)."""

    async def trigger(self, name: str, *, actor: str) -> dict[str, Any]: ...

    async def kill(self, run_id: str, *, actor: str, forward: bool = True) -> dict[str, Any]: ...

    async def read_log(
        self, run_id: str, offset: int, *, wait: float = 0.0, attempt: int | None = None
    ) -> tuple[bytes, bool]: ...

    async def read_log_anywhere(
        self, run_id: str, offset: int, *, wait: float = 0.0, attempt: int | None = None
    ) -> tuple[bytes, bool]: ...

    def upcoming(self, name: str, n: int) -> list[int]: ...

    def annotate(self, run: dict[str, Any]) -> dict[str, Any]: ...

    def heartbeat(self, host: str) -> dict[str, Any]: ...


class _Params:
    """Typed access to one request's params; refuses missing, mistyped and unknown keys."""

    def __init__(self, method: str, params: object, allowed: tuple[str, ...]) -> None:
        if not isinstance(params, Mapping):
            raise InvalidRequest(f"{method}: params must be a map, got {type(params).__name__}")
        unknown = sorted(str(k) for k in params if k not in allowed and k != "actor")
        if unknown:
            raise InvalidRequest(f"{method}: unknown parameter {unknown[0]!r}")
        self.method = method
        self.raw = params

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"{self.method}: {key} must be a non-empty string")
        return value

    def name(self, key: str = "name") -> str:
        value = self.text(key)
        assert value is not None
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.raw.get(key, default)
        if value is None:
            value = default
        if type(value) is not int or not lo <= value <= hi:
            raise InvalidRequest(f"{self.method}: {key} must be an integer in [{lo}, {hi}]")
        return value

    def map(self, key: str) -> Mapping[str, Any]:
        value = self.raw.get(key)
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise InvalidRequest(f"{self.method}: {key} must be a map of field names to values")
        return value

    @property
    def actor(self) -> str:
        value = self.raw.get("actor", "anonymous")
        if not isinstance(value, str) or not value or len(value) > 256:
            raise InvalidRequest(f"{self.method}: actor must be a non-empty string")
        return value

    @property
    def stale(self) -> bool:
        return self.raw.get("stale") is True


class Service:
    """The handlers of one node's RPC server."""

    def __init__(
        self,
        replica: Replica,
        engine: RunEngine,
        blobs: Blobs,
        config: Config,
        *,
        cluster: ClusterRuntime | None = None,
        storage_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.replica = replica
        self._storage_error = storage_error
        self.engine = engine
        self.blobs = blobs
        self.config = config
        self.cluster = cluster

    def handlers(self) -> dict[str, Handler]:
        """Method name -> handler, for ``RpcServer``."""
        return {
            "job.create": self.job_create,
            "job.update": self.job_update,
            "job.get": self.job_get,
            "job.delete": self.job_delete,
            "job.pause": self.job_pause,
            "job.resume": self.job_resume,
            "job.history": self.job_history,
            "job.list": self.job_list,
            "job.next": self.job_next,
            "job.trigger": self.job_trigger,
            "run.list": self.run_list,
            "run.get": self.run_get,
            "run.logs": self.run_logs,
            "run.kill": self.run_kill,
            "node.list": self.node_list,
            "cluster.status": self.cluster_status,
            "raft.propose": self.raft_propose,
            "engine.heartbeat": self.engine_heartbeat,
            "engine.kill": self.engine_kill,
            "engine.logs": self.engine_logs,
        }

    # --- writes -----------------------------------------------------------------

    async def _spec_fields(
        self, method: str, spec: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        """A request's job fields, with a script's bytes replaced by its pin; and the bytes.

        ``script`` as bytes is a script uploaded with the request. ``script_url``
        names an object already in this cluster's storage: it is read here,
        before anything is proposed (every replica then applies the same pinned
        hash; ``apply`` never reads storage), and the version records the URL and
        the sha256 of what was read. A later change of that object changes
        nothing that runs until the job is updated with the URL again.
        """
        fields = {k: v for k, v in spec.items() if k not in ("script_name", "script_url")}
        script = fields.get("script")
        limit = self.config.jobs.max_script_bytes
        url = spec.get("script_url")
        if url is not None:
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"{method}: script_url must be a non-empty string")
            if script is not None:
                raise InvalidRequest(f"{method}: give script or script_url, not both")
            try:
                canonical, data = await self.blobs.read_script_url(url, limit)
            except InvalidRequest as exc:
                raise type(exc)(f"{method}: {exc}") from None
            except StorageError as exc:
                raise type(exc)(f"{method}: cannot read script_url {url}: {exc}") from None
            sha = hashlib.sha256(data).hexdigest()
            fields["script"] = Script(sha, len(data), canonical).to_wire()
            return fields, data
        if not isinstance(script, bytes | bytearray):
            return fields, b""
        if len(script) > limit:
            raise InvalidRequest(
                f"{method}: script is {len(script)} bytes; the limit is {limit} "
                "([jobs] max_script_bytes)"
            )
        fields["script"] = Script(hashlib.sha256(script).hexdigest(), len(script)).to_wire()
        return fields, bytes(script)

    async def _write(self, cmd: Any, script: bytes = b"") -> Any:
        """Check, store the script (only once the command is known good), propose, unwrap."""
        self.replica.store.precheck(cmd, max_script_bytes=self.config.jobs.max_script_bytes)
        if script:
            await self.blobs.put_script(script)
        return unwrap(await self.replica.propose(cmd))

    async def job_create(self, params: dict[str, Any]) -> Any:
        p = _Params("job.create", params, ("name", "spec"))
        name = p.name()
        fields, script = await self._spec_fields(p.method, p.map("spec"))
        if "name" in fields and fields["name"] != name:
            raise InvalidRequest("job.create: spec.name differs from name")
        fields["name"] = name
        spec = JobSpec.from_wire(fields)
        cmd = CreateJob(**self.replica.stamp(p.actor), job=spec)  # type: ignore[arg-type]
        return await self._write(cmd, script)

    async def job_update(self, params: dict[str, Any]) -> Any:
        p = _Params("job.update", params, ("name", "spec"))
        name = p.name()
        changes, script = await self._spec_fields(p.method, p.map("spec"))
        if not changes:
            raise InvalidRequest("job.update: nothing to change")
        cmd = UpdateJob(**self.replica.stamp(p.actor), name=name, changes=changes)  # type: ignore[arg-type]
        return await self._write(cmd, script)

    async def job_delete(self, params: dict[str, Any]) -> Any:
        p = _Params("job.delete", params, ("name",))
        return await self._write(DeleteJob(**self.replica.stamp(p.actor), name=p.name()))  # type: ignore[arg-type]

    async def job_pause(self, params: dict[str, Any]) -> Any:
        p = _Params("job.pause", params, ("name",))
        return await self._write(PauseJob(**self.replica.stamp(p.actor), name=p.name()))  # type: ignore[arg-type]

    async def job_resume(self, params: dict[str, Any]) -> Any:
        p = _Params("job.resume", params, ("name",))
        return await self._write(ResumeJob(**self.replica.stamp(p.actor), name=p.name()))  # type: ignore[arg-type]

    async def job_trigger(self, params: dict[str, Any]) -> Any:
        p = _Params("job.trigger", params, ("name",))
        # read your writes: a job created a moment ago through this host (committed on
        # the leader) may not be applied here yet; the engine reads this host's table
        await self.replica.read_barrier()
        return await self.engine.trigger(p.name(), actor=p.actor)

    async def run_kill(self, params: dict[str, Any]) -> Any:
        p = _Params("run.kill", params, ("id",))
        await self.replica.read_barrier()  # (as job.trigger: a run just made elsewhere)
        return await self.engine.kill(p.name("id"), actor=p.actor)

    async def raft_propose(self, params: dict[str, Any]) -> Any:
        """A command forwarded by a follower (``dcrond.forward``): commit it here."""
        p = _Params("raft.propose", params, ("data",))
        data = p.raw.get("data")
        if not isinstance(data, bytes) or not data:
            raise InvalidRequest("raft.propose: data must be an encoded command")
        cmd = decode_entry(data)  # refuse garbage before it takes a log entry
        if isinstance(cmd, Batch):
            # an engine's batch of run commands: apply answers each one (a dry run of each
            # here would cost as much again, for a verdict the engine reads the same way)
            return await self.replica.propose_forwarded(data)
        try:
            self.replica.store.precheck(cmd, max_script_bytes=self.config.jobs.max_script_bytes)
        except InvalidRequest as exc:
            # The answer apply would give, in the form apply gives it: a Rejected result the
            # follower's Replica.propose returns, as it does on the leader. Raised, it reached
            # the follower's engine as an exception -- a RunStarted or RunFinished sent again
            # after its first copy committed (a leader change, a restart) stopped the daemon.
            return encode_result(rejected_from(exc))
        return await self.replica.propose_forwarded(data)

    async def engine_heartbeat(self, params: dict[str, Any]) -> Any:
        """A host tells the leader it is alive (its lease, ``dcrond.engine._lease``)."""
        p = _Params("engine.heartbeat", params, ("host", "running"))
        p.integer("running", 0, 0, 1 << 31)
        return self.engine.heartbeat(p.name("host"))

    # --- reads ------------------------------------------------------------------

    async def _fresh(self, p: _Params) -> None:
        if not p.stale:
            await self.replica.read_barrier()

    async def job_get(self, params: dict[str, Any]) -> Any:
        p = _Params("job.get", params, ("name", "stale"))
        await self._fresh(p)
        return self.replica.store.get_job(p.name())

    async def job_history(self, params: dict[str, Any]) -> Any:
        p = _Params("job.history", params, ("name", "stale"))
        await self._fresh(p)
        return self.replica.store.history(p.name())

    async def job_list(self, params: dict[str, Any]) -> Any:
        p = _Params("job.list", params, ("stale",))
        await self._fresh(p)
        return self.replica.store.list_jobs()

    async def job_next(self, params: dict[str, Any]) -> Any:
        p = _Params("job.next", params, ("name", "n", "stale"))
        n = p.integer("n", 10, 1, 1000)
        await self._fresh(p)
        name = p.name()
        self.replica.store.get_job(name)  # NotFound for an unknown job
        return [format_instant(ms) for ms in self.engine.upcoming(name, n)]

    async def run_list(self, params: dict[str, Any]) -> Any:
        p = _Params("run.list", params, ("job", "state", "limit", "stale"))
        limit = p.integer("limit", 50, 1, 10_000)
        await self._fresh(p)
        runs = self.replica.store.list_runs(
            job=p.text("job", required=False), state=p.text("state", required=False), limit=limit
        )
        return [self.engine.annotate(run) for run in runs]

    async def run_get(self, params: dict[str, Any]) -> Any:
        p = _Params("run.get", params, ("id", "stale"))
        await self._fresh(p)
        return self.engine.annotate(self.replica.store.get_run(p.name("id")))

    async def run_logs(self, params: dict[str, Any]) -> Any:
        p = _Params("run.logs", params, ("id", "offset", "wait"))
        offset = p.integer("offset", 0, 0, 1 << 62)
        wait = LOG_POLL_SECONDS if p.raw.get("wait", True) is not False else 0.0
        data, done = await self.engine.read_log_anywhere(p.name("id"), offset, wait=wait)
        return {"data": data, "done": done, "offset": offset + len(data)}

    # --- between hosts (node certificates only: see dcrond.rpc) ---------------------

    async def engine_kill(self, params: dict[str, Any]) -> Any:
        """Another host passes on a ``run.kill`` for a run placed on this one."""
        p = _Params("engine.kill", params, ("id",))
        return await self.engine.kill(p.name("id"), actor=p.actor, forward=False)

    async def engine_logs(self, params: dict[str, Any]) -> Any:
        """Another host reads the log of an attempt that runs (or ran) here."""
        p = _Params("engine.logs", params, ("id", "offset", "wait", "attempt"))
        offset = p.integer("offset", 0, 0, 1 << 62)
        attempt = p.integer("attempt", 1, 1, 1 << 20)
        wait = p.raw.get("wait", 0.0)
        if type(wait) not in (int, float) or not 0 <= wait <= LOG_POLL_SECONDS:
            raise InvalidRequest(f"engine.logs: wait must be 0 to {LOG_POLL_SECONDS:g} seconds")
        data, done = await self.engine.read_log(p.name("id"), offset, wait=wait, attempt=attempt)
        return {"data": data, "done": done}

    async def node_list(self, params: dict[str, Any]) -> Any:
        _Params("node.list", params, ("stale",))
        st = self.replica.node.statistics()
        conf = set(st.voters) | set(st.learners)

        def role(name: str) -> str | None:
            if name == st.leader:
                return "leader"
            if name in st.voters:
                return "voter"
            if name in st.learners:
                return "learner"
            return None

        rows: dict[str, dict[str, Any]] = {}
        if self.cluster is not None:
            wall, mono = self.replica.now_ms(), trio.current_time()
            for m in self.cluster.gossip.members():
                same = m.meta.cluster_id == self.cluster.cluster_id
                if not same and m.name not in conf:
                    continue
                seen = m.last_seen if m.name != st.node_id else mono
                rows[m.name] = {
                    "name": m.name,
                    "address": m.address[0],
                    "api_port": m.meta.api_port,
                    "state": m.state.name.lower() if same else "other_cluster",
                    "raft_role": role(m.name),
                    "tags": m.meta.tag_map(),
                    "free_slots": m.meta.free_slots,
                    "version": m.meta.version or None,
                    "last_seen": None
                    if seen is None
                    else format_instant(wall - int((mono - seen) * 1000)),
                }
        for name in sorted(conf | {st.node_id}):
            rows.setdefault(
                name,
                {
                    "name": name,
                    "address": None,
                    "api_port": None,
                    "state": "alive" if name == st.node_id else "unknown",
                    "raft_role": role(name),
                    "tags": {},
                    "free_slots": None,
                    "version": __version__ if name == st.node_id else None,
                    "last_seen": None,
                },
            )
        return [rows[name] for name in sorted(rows)]

    async def cluster_status(self, params: dict[str, Any]) -> Any:
        _Params("cluster.status", params, ("stale",))
        st = self.replica.node.statistics()
        store = self.replica.store.statistics()
        return {
            "cluster": self.config.cluster.name,
            "node": st.node_id,
            "role": st.role.name.lower(),
            "leader": st.leader,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "last_index": st.last_index,
            "voters": list(st.voters),
            "learners": list(st.learners),
            "lag": self.replica.node.follower_lag() or None,
            "ticks_dropped": st.ticks_dropped,
            "cluster_id": self.cluster.cluster_id if self.cluster is not None else None,
            "jobs": store.jobs,
            "runs": store.runs,
            "storage": {"url": self.blobs.url, "error": self._storage_error()},
            "version": __version__,
            "time": format_instant(self.replica.now_ms()),
        }
