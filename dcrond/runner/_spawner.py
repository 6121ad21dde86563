"""The spawner: one small long-lived process per runner that forks every job and reaps it.

Theory of operation
-------------------

This file is a standalone program (``python -I -S _spawner.py FD``): it
imports only built-in modules — not trio, not dcrond, not even
``typing`` — so it starts in ~15 ms and, being small, forks cheaply. The runner
starts it once, in its own session, with one end of a ``SOCK_SEQPACKET``
socketpair as descriptor ``FD``; every packet is one ``marshal``-encoded
tuple (both ends run the same interpreter, and trust each other).

Requests (daemon -> spawner), with descriptors passed by ``SCM_RIGHTS``:

- ``("spawn", id, argv, env, PATH, cwd, creds, nofile, state_path,
  record)`` with the output pipe's write end and read end. ``env`` is a
  list of ``b"K=V"``; ``creds`` is ``None`` or ``(uid, gid, groups)``;
  ``nofile`` the soft open-files limit the job gets back (``-1``: leave
  it); ``record`` the attempt's state record without the fields only the
  spawner knows. A request too big for one packet comes as ``("big",)``
  with a memfd holding the encoded request as a third descriptor.

Replies (spawner -> daemon):

- ``("pid", id, pid)`` once the job is exec'd and its record written;
- ``("error", id, errno, text)`` when no process could be made (nothing runs);
- ``("exited", id, exit_code, signal, pid)`` once the job has ended, *after*
  its status was appended to its state file.

**Starting.** A job of the daemon's own user is started with
``_posixsubprocess.fork_exec`` — what ``subprocess`` uses, here without
``Popen``'s bookkeeping — which *vfork*s: no page tables are copied and
the child runs only C code up to the exec (``setsid``, so the job's pid is
its process group and session id; stdin on /dev/null, stdout and stderr on
the pipe; the working dir; SIGPIPE and SIGXFSZ back to default), so a
start costs about what ``Popen`` costs from a small process. It searches
the job's ``PATH`` like ``execvp``. The soft ``RLIMIT_NOFILE`` is lowered
to the original around the call (the spawner inherits the daemon's raised
limit: it holds a pipe per running job), so the job sees the original from
its first instruction. ``fork_exec`` returns once the child has exec'd
or failed; a failure before the exec is reported through its error pipe,
and the spawner writes a ``[dcrond: …]`` line into the job's output and
records the shell's code: 2 when the working dir cannot be entered, 127
when the program is not found, 126 when it cannot be executed. A job of
another user (the daemon is root) is forked in Python instead
(``_child``): ``fork_exec`` would enter the working dir before dropping
privileges, and it cannot vfork there anyway; the child drops them
(``setgroups``, ``setgid``, ``setuid``), then enters the dir, so a dir the
user may not enter fails the attempt as it would in a shell. Either way the
spawner then appends the attempt's record to its state file (``_statefile``:
the daemon's part, plus the job's pid and start time, and which descriptor
of ours holds the pipe) and replies with the pid. Every descriptor of ours
is close-on-exec, so the job gets exactly 0, 1, 2.

The spawner keeps the pipe's read end while the job runs (never reading
it): if the daemon dies, the job never gets SIGPIPE, and a new daemon opens
the same pipe again through ``/proc/<spawner>/fd/<n>``. It learns of ended
children through SIGCHLD (a wake-up descriptor) and ``waitid(WNOWAIT)``: the
exact exit code or signal is appended to the state file *before* the child
is reaped, so as long as the spawner lives, a job's pid cannot be reused
before its status is on disk.

When the daemon's end of the socket closes (the runner is closed, or the
daemon exited or crashed), the spawner takes no more requests, keeps
reaping and recording, and exits once it has no children left — at once if
it has none. If the spawner itself is killed, its jobs are re-parented and
reaped without a status: the runner then watches them through pidfds and
their attempts end ``lost`` (unless dcrond was stopping them).
"""

from __future__ import annotations

import _posixsubprocess
import _socket
import errno
import gc
import marshal
import os
import resource
import select
import signal
import sys

TYPE_CHECKING = False  # not ``typing``'s: importing typing would add 15 ms to the start
if TYPE_CHECKING:
    from typing import Any

    Request = tuple[Any, ...]

#: a request up to this size comes in one packet (a bigger one in a memfd)
PACKET = 65536
_FDS_SPACE = _socket.CMSG_SPACE(4 * 4)


def _fds_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, usable, 4))
    return fds


def _start_ticks(pid: int) -> int:
    """A process's start time (field 22 of /proc/<pid>/stat, in clock ticks since boot)."""
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    return int(raw[raw.rindex(b")") + 2 :].split()[19])


def _failure(report: bytes, prog: str, cwd: str) -> tuple[str, int]:
    """The note and shell exit code for a child that reported an error instead of exec'ing."""
    kind, _, rest = report.partition(b":")
    hexerr, _, where = rest.partition(b":")
    try:
        err = int(hexerr, 16) if kind == b"OSError" else 0
    except ValueError:
        err = 0
    why = os.strerror(err) if err else rest.decode(errors="replace")
    if where == b"noexec":  # before the exec: entering the working dir (or switching user)
        if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES) or not os.path.isdir(cwd):
            return f"can't cd to {cwd}: {why}", 2
        return f"cannot start {prog}: {why}", 126
    if err in (errno.ENOENT, errno.ENOTDIR):
        return f"{prog}: not found", 127
    return f"cannot run {prog}: {why}", 126


def _child(req: Request, executables: tuple[bytes, ...], out_w: int, devnull: int) -> int:
    """In a forked child: become the job's user, then exec; returns an exit code on failure."""
    _op, _rid, argv, env, _path, cwd, creds, nofile, _state, _record = req

    def say(text: str) -> None:
        try:  # noqa: SIM105 (no contextlib: it would slow the start)
            os.write(1, f"[dcrond: {text}]\n".encode(errors="replace"))
        except OSError:
            pass

    os.setsid()
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    if nofile >= 0:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    uid, gid, groups = creds
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as e:
        say(f"cannot switch to uid {uid}: {os.strerror(e.errno or 0)}")
        return 126
    try:
        os.chdir(cwd)
    except OSError as e:
        say(f"can't cd to {cwd}: {os.strerror(e.errno or 0)}")
        return 2
    environ = dict(item.split(b"=", 1) for item in env)
    error: OSError | None = None
    for exe in executables:
        try:
            os.execve(exe, argv, environ)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR) and error is None:
                error = e
    if error is None:
        say(f"{argv[0]}: not found")
        return 127
    say(f"cannot run {argv[0]}: {os.strerror(error.errno or 0)}")
    return 126


class Spawner:
    """The spawner's state: the socket, its children and what they hold."""

    def __init__(self, sock_fd: int) -> None:
        os.set_inheritable(sock_fd, False)
        self.sock = _socket.socket(fileno=sock_fd)
        self.sock.setblocking(False)
        self.me = os.getpid()
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.buf = bytearray(PACKET)
        self.open = True  #: the daemon's end is still there
        #: pid -> (request id, state file, the pipe's read end, exit code if it never ran)
        self.children: dict[int, tuple[int, str, int, int | None]] = {}
        self.exec_cache: dict[tuple[str, str | None], tuple[bytes, ...]] = {}
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.outbox: list[bytes] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)

    def send(self, msg: Request) -> None:
        """Queue a reply; sent as soon as the socket takes it."""
        if self.open:
            self.outbox.append(marshal.dumps(msg))
            self.flush()

    def flush(self) -> None:
        while self.outbox and self.open:
            try:
                self.sock.send(self.outbox[0])
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            del self.outbox[0]

    def close(self) -> None:
        """The daemon is gone: take no more requests."""
        if self.open:
            self.open = False
            self.outbox.clear()
            self.sock.close()

    def read_requests(self) -> None:
        while self.open:
            try:
                n, anc, _flags, _addr = self.sock.recvmsg_into(
                    [self.buf], _FDS_SPACE, _socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            fds = _fds_of(anc)
            if n == 0 and not fds:
                self.close()
                return
            req = marshal.loads(self.buf[:n])
            if req[0] == "big" and len(fds) == 3:
                big = fds.pop()
                with os.fdopen(big, "rb") as f:
                    req = marshal.loads(f.read())
            if req[0] != "spawn" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            self.spawn(req, fds[0], fds[1])

    def executables(self, prog: str, path: str | None) -> tuple[bytes, ...]:
        """Where ``execvp`` would look for ``prog`` on ``path`` (cached)."""
        key = (prog, path)
        found = self.exec_cache.get(key)
        if found is None:
            raw = os.fsencode(prog)
            if b"/" in raw:
                found = (raw,)
            else:
                dirs = (path if path is not None else os.defpath).split(":")
                found = tuple(os.path.join(os.fsencode(d or "."), raw) for d in dirs)
            if len(self.exec_cache) > 256:
                self.exec_cache.clear()
            self.exec_cache[key] = found
        return found

    def spawn(self, req: Request, out_w: int, out_r: int) -> None:
        _op, rid, argv, env, path, cwd, creds, nofile, _state, _record = req
        if creds is not None:
            self.spawn_as(req, out_w, out_r)
            return
        err_r, err_w = os.pipe()
        lowered = 0 <= nofile < self.nofile[0]
        try:
            if lowered:  # the job's first instruction already sees the original limit
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, self.nofile[1]))
            # (args, executable_list, close_fds, pass_fds, cwd, env, p2cread, p2cwrite,
            #  c2pread, c2pwrite, errread, errwrite, errpipe_read, errpipe_write,
            #  restore_signals, call_setsid, pgid_to_set, gid, extra_groups, uid,
            #  child_umask, preexec_fn, allow_vfork): vfork unless switching users
            pid = _posixsubprocess.fork_exec(
                argv, self.executables(argv[0], path), False, (), cwd, env,
                self.devnull, -1, -1, out_w, -1, out_w, err_r, err_w,
                True, True, -1, None, None, None, -1, None, True,  # type: ignore[arg-type]
            )  # fmt: skip
        except OSError as e:
            os.close(out_w)
            os.close(out_r)
            self.send(("error", rid, e.errno or 0, f"cannot start a process: {e.strerror}"))
            return
        finally:
            if lowered:
                resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)
            os.close(err_w)
        report = b""
        while chunk := os.read(err_r, 4096):  # EOF once it exec'd (or exited)
            report += chunk
        os.close(err_r)
        code = None
        if report:
            note, code = _failure(report, argv[0], cwd)
            try:  # noqa: SIM105 (no contextlib: it would slow the start)
                os.write(out_w, f"[dcrond: {note}]\n".encode(errors="replace"))
            except OSError:
                pass
        os.close(out_w)
        self.started(req, pid, out_r, code=code)

    def spawn_as(self, req: Request, out_w: int, out_r: int) -> None:
        """Start a job as another user: fork, and in the child switch user, *then* enter its dir.

        ``fork_exec`` would enter the working dir before dropping privileges
        (and cannot vfork here anyway), so this child does it in Python.
        """
        rid, argv, path = req[1], req[2], req[4]
        executables = self.executables(argv[0], path)
        try:
            pid = os.fork()
        except OSError as e:
            os.close(out_w)
            os.close(out_r)
            self.send(("error", rid, e.errno or 0, f"cannot start a process: {e.strerror}"))
            return
        if pid == 0:
            code = 126
            try:
                code = _child(req, executables, out_w, self.devnull)
            finally:
                os._exit(code)
        os.close(out_w)
        self.started(req, pid, out_r)

    def started(self, req: Request, pid: int, out_r: int, *, code: int | None = None) -> None:
        """Record a started job and tell the daemon its pid."""
        rid, state_path, record = req[1], req[8], req[9]
        try:
            fd = os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                tail = b'"pid": %d, "start_ticks": %d, "holder": %d, "holder_fd": %d}\n'
                os.write(fd, record + tail % (pid, _start_ticks(pid), self.me, out_r))
            finally:
                os.close(fd)
        except (OSError, ValueError, IndexError):
            pass  # unrecorded: a restart cannot find the attempt, which is then lost
        self.children[pid] = (rid, state_path, out_r, code)
        self.send(("pid", rid, pid))

    def reap(self) -> None:
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            entry = self.children.pop(pid, None)
            code: int | None = None
            sig: int | None = None
            if entry is not None and entry[3] is not None:
                code = entry[3]  # it never ran: the shell's code for why
            elif info.si_code == os.CLD_EXITED:
                code = info.si_status
            else:
                sig = info.si_status
            if entry is not None:
                line = (
                    b'{"exit": %d}\n' % code
                    if code is not None
                    else b'{"signal": %d}\n' % (sig or 0)
                )
                try:  # before the reap: until then the pid cannot name another process
                    fd = os.open(entry[1], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                    try:
                        os.write(fd, line)
                    finally:
                        os.close(fd)
                except OSError:
                    pass
            os.waitpid(pid, 0)
            if entry is not None:
                os.close(entry[2])
                self.send(("exited", entry[0], code, sig, pid))

    def loop(self) -> None:
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        sock_fd = self.sock.fileno()
        poller.register(sock_fd, select.POLLIN)
        registered, writing = True, False
        while self.open or self.children:
            if registered and not self.open:
                poller.unregister(sock_fd)
                registered = False
            elif registered and bool(self.outbox) != writing:
                writing = bool(self.outbox)
                poller.modify(sock_fd, select.POLLIN | (select.POLLOUT if writing else 0))
            for fd, ev in poller.poll():
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                elif self.open:
                    if ev & select.POLLOUT:
                        self.flush()
                    if ev & ~select.POLLOUT:
                        self.read_requests()
            self.reap()


def main() -> None:
    gc.disable()  # nothing here makes cycles; and a collection would touch every page
    Spawner(int(sys.argv[1])).loop()


if __name__ == "__main__":
    main()
