"""Applying the job commands (create, update, pause, resume, delete) to the table.

Each function runs inside the apply transaction the store opened, reads and
writes through ``db`` only, and either returns the JSON-able result or
raises an InvalidRequest subclass *before* it has written anything that the
store's savepoint would not roll back. Everything it needs to decide comes
from the command and the table: no clock, no randomness, no host state.
"""

from __future__ import annotations

from typing import Any

import apsw
import msgpack

from dcrond.errors import AlreadyExists, InvalidRequest, NotFound
from dcrond.store._commands import CreateJob, DeleteJob, PauseJob, ResumeJob, UpdateJob
from dcrond.store._jobspec import JobSpec, merge_changes
from dcrond.store._objects import changed_fields, job_json
from dcrond.store._results import Conflict
from dcrond.store._schema import one


def _pack(value: object) -> bytes:
    out: bytes = msgpack.packb(value)
    return out


def unpack_spec(blob: bytes) -> dict[str, Any]:
    """Decode a stored spec (canonical msgpack) to its wire-form dict.

    Fields added since the spec was stored take their defaults.
    """
    spec: dict[str, Any] = msgpack.unpackb(blob)
    spec.setdefault("on", "any")
    return spec


def no_such_job(name: str) -> NotFound:
    """The NotFound a missing job gives."""
    return NotFound(f"no job named {name!r}")


def _job_row(db: apsw.Connection, name: str) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT version, spec, created_at, created_by FROM jobs WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise no_such_job(name)
    return tuple(row)


def _check_after(db: apsw.Connection, name: str, after: tuple[str, ...]) -> None:
    """Refuse ``after`` if it names a missing job or would close a cycle through ``name``."""
    for dep in after:
        if db.execute("SELECT 1 FROM jobs WHERE name = ?", (dep,)).fetchone() is None:
            raise InvalidRequest(
                f"after: no job named {dep!r}; a job can only run after jobs that exist"
            )
    # Depth-first search from each new dependency along existing edges; reaching
    # ``name`` again means the new edges would close a cycle. Edges out of
    # ``name`` itself are about to be replaced, so the search never expands it.
    parent: dict[str, str] = {}
    for start in after:
        if start in parent:
            continue
        parent[start] = name
        stack = [start]
        while stack:
            node = stack.pop()
            for (nxt,) in db.execute(
                "SELECT after FROM job_deps WHERE job = ? ORDER BY after", (node,)
            ):
                if nxt == name:
                    path = [name, node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    path = [name, *reversed(path[1:]), name]
                    raise InvalidRequest(
                        f"after: running {name!r} after {start!r} would make a cycle: "
                        + " -> ".join(path)
                    )
                if nxt not in parent:
                    parent[nxt] = node
                    stack.append(nxt)


def create_job(db: apsw.Connection, cmd: CreateJob) -> dict[str, Any]:
    """Add a new job at version 1 (or, for a name used before, the next version)."""
    spec = cmd.job
    if db.execute("SELECT 1 FROM jobs WHERE name = ?", (spec.name,)).fetchone() is not None:
        raise AlreadyExists(f"a job named {spec.name!r} already exists; update it instead")
    _check_after(db, spec.name, spec.after)
    (last,) = one(
        db, "SELECT coalesce(max(version), 0) FROM job_versions WHERE name = ?", (spec.name,)
    )
    version = last + 1
    wire = spec.to_wire()
    blob = _pack(wire)
    db.execute(
        "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            spec.name,
            version,
            spec.paused,
            spec.schedule,
            spec.timezone,
            blob,
            cmd.now,
            cmd.actor,
            cmd.now,
            cmd.actor,
        ),
    )
    _insert_version(
        db,
        cmd,
        name=spec.name,
        version=version,
        op="create",
        changed=changed_fields(None, wire),
        blob=blob,
        created_at=cmd.now,
        created_by=cmd.actor,
    )
    for dep in spec.after:
        db.execute("INSERT INTO job_deps VALUES (?, ?)", (spec.name, dep))
    return job_json(
        wire,
        version=version,
        created_at=cmd.now,
        created_by=cmd.actor,
        updated_at=cmd.now,
        updated_by=cmd.actor,
    )


def _insert_version(
    db: apsw.Connection,
    cmd: CreateJob | UpdateJob | PauseJob | ResumeJob | DeleteJob,
    *,
    name: str,
    version: int,
    op: str,
    changed: list[str],
    blob: bytes,
    created_at: int,
    created_by: str,
) -> None:
    db.execute(
        "INSERT INTO job_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, version, op, cmd.actor, cmd.now, _pack(changed), blob, created_at, created_by),
    )


def _change(
    db: apsw.Connection,
    cmd: UpdateJob | PauseJob | ResumeJob,
    op: str,
    changes: dict[str, object],
) -> dict[str, Any]:
    version, blob, created_at, created_by = _job_row(db, cmd.name)
    old_wire = unpack_spec(blob)
    new_spec = JobSpec.from_wire(merge_changes(old_wire, changes))
    new_wire = new_spec.to_wire()
    changed = changed_fields(old_wire, new_wire)
    if not changed:  # nothing to do: no new version, and the answer is the job as it is
        updated_at, updated_by = one(
            db, "SELECT updated_at, updated_by FROM jobs WHERE name = ?", (cmd.name,)
        )
        return job_json(
            old_wire,
            version=version,
            created_at=created_at,
            created_by=created_by,
            updated_at=updated_at,
            updated_by=updated_by,
        )
    if "after" in changed:
        _check_after(db, cmd.name, new_spec.after)
    version += 1
    new_blob = _pack(new_wire)
    db.execute(
        "UPDATE jobs SET version = ?, paused = ?, schedule = ?, timezone = ?, spec = ?, "
        "updated_at = ?, updated_by = ? WHERE name = ?",
        (
            version,
            new_spec.paused,
            new_spec.schedule,
            new_spec.timezone,
            new_blob,
            cmd.now,
            cmd.actor,
            cmd.name,
        ),
    )
    _insert_version(
        db,
        cmd,
        name=cmd.name,
        version=version,
        op=op,
        changed=changed,
        blob=new_blob,
        created_at=created_at,
        created_by=created_by,
    )
    if "after" in changed:
        db.execute("DELETE FROM job_deps WHERE job = ?", (cmd.name,))
        for dep in new_spec.after:
            db.execute("INSERT INTO job_deps VALUES (?, ?)", (cmd.name, dep))
    return job_json(
        new_wire,
        version=version,
        created_at=created_at,
        created_by=created_by,
        updated_at=cmd.now,
        updated_by=cmd.actor,
    )


def update_job(db: apsw.Connection, cmd: UpdateJob) -> dict[str, Any]:
    """Change the fields the command names; a change that changes nothing adds no version."""
    return _change(db, cmd, "update", dict(cmd.changes))


def pause_job(db: apsw.Connection, cmd: PauseJob) -> dict[str, Any]:
    """Set ``paused`` (a new version, unless it was paused already)."""
    return _change(db, cmd, "pause", {"paused": True})


def resume_job(db: apsw.Connection, cmd: ResumeJob) -> dict[str, Any]:
    """Clear ``paused`` (a new version, unless it was not paused)."""
    return _change(db, cmd, "resume", {"paused": False})


def delete_job(db: apsw.Connection, cmd: DeleteJob) -> dict[str, Any]:
    """Delete a job, recording a last version; refused while other jobs run after it."""
    version, blob, created_at, created_by = _job_row(db, cmd.name)
    needed_by = [
        r[0]
        for r in db.execute("SELECT job FROM job_deps WHERE after = ? ORDER BY job", (cmd.name,))
    ]
    if needed_by:
        raise Conflict(
            f"job {cmd.name!r} cannot be deleted: "
            + ", ".join(repr(n) for n in needed_by)
            + " run after it; remove it from their 'after' first"
        )
    version += 1
    _insert_version(
        db,
        cmd,
        name=cmd.name,
        version=version,
        op="delete",
        changed=[],
        blob=blob,
        created_at=created_at,
        created_by=created_by,
    )
    db.execute("DELETE FROM jobs WHERE name = ?", (cmd.name,))
    db.execute("DELETE FROM job_deps WHERE job = ?", (cmd.name,))
    return {"name": cmd.name, "version": version, "deleted": True}
