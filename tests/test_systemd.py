"""dcrond under systemd: the shipped unit, and the daemon's side of the protocol.

The unit files in ``dist/`` are checked with systemd's own offline tools
(``systemd-analyze verify`` and ``security``, as Debian 12 ships them).
The daemon is checked as systemd sees it: a real ``dcrond`` process whose
``$NOTIFY_SOCKET`` is a real AF_UNIX datagram socket this test reads
(a path, and an abstract ``@name``), with the variables systemd sets.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcrond._logfmt import (
    JournalFormatter,
    JsonFormatter,
    default_format,
    make_handler,
    parse_event,
)
from dcrond._systemd import Notifier
from dcrond.config import default_data_dir, default_tls_dir
from dcrond.daemon import EX_CONFIG, SHUTDOWN_GRACE_S
from dcrond.testing._cluster import free_ports

DIST = Path(__file__).resolve().parent.parent / "dist"
UNIT = DIST / "dcrond.service"
DROP_IN = DIST / "dcrond.service.d" / "jobs-as-users.conf"
SYSUSERS = DIST / "dcrond.sysusers"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: package systemd)",
)

# --- the unit files ------------------------------------------------------------------------------


def _directives(*paths: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit's [Service] section, in order, drop-ins applied.

    An empty assignment resets a key, as systemd does for list settings.
    """
    out: dict[str, list[str]] = {}
    for path in paths:
        section = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section != "[Service]":
                continue
            key, _, value = line.partition("=")
            if value:
                out.setdefault(key, []).append(value)
            else:
                out[key] = []
    return out


def _one(directives: dict[str, list[str]], key: str) -> str:
    """A single-valued setting: its last assignment wins, as in systemd."""
    values = directives.get(key, [])
    assert values, f"{key} is not set"
    return values[-1]


def _seconds(span: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", span)
    assert m, span
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def test_unit_says_what_the_daemon_does() -> None:
    d = _directives(UNIT)
    assert _one(d, "Type") == "notify"
    assert _one(d, "ExecStart").endswith("dcrond --config /etc/dcrond/dcrond.toml")
    assert _one(d, "Restart") == "on-failure"
    assert _one(d, "RestartPreventExitStatus") == str(EX_CONFIG)
    # runs survive a restart and are re-adopted (docs/runs.md): systemd must not kill them
    assert _one(d, "KillMode") == "process"
    assert "PrivateTmp" not in d
    assert "RemoveIPC" not in d
    assert _one(d, "OOMPolicy") == "continue"
    # systemd never SIGKILLs a daemon that is still finishing its shutdown
    assert _seconds(_one(d, "TimeoutStopSec")) > SHUTDOWN_GRACE_S + 5
    assert _seconds(_one(d, "WatchdogSec")) >= 10
    assert _one(d, "StateDirectory") == "dcrond"
    assert _one(d, "ConfigurationDirectory") == "dcrond"
    assert _one(d, "RestrictAddressFamilies") == "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateDevices", "RestrictSUIDSGID"):
        assert _one(d, key) == "yes", key
    assert _one(d, "ProtectSystem") == "strict"


def test_drop_in_runs_as_root_with_the_rights_to_switch_users_and_see_their_jobs() -> None:
    d = _directives(UNIT, DROP_IN)
    assert _one(d, "User") == "root"
    caps = set(_one(d, "CapabilityBoundingSet").split())
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_KILL"} <= caps
    assert "CAP_SYS_ADMIN" not in caps
    assert _one(d, "ProtectProc") == "default"
    assert d["ReadWritePaths"] == []
    assert _one(d, "ProtectHome") == "no"
    assert _one(d, "KillMode") == "process"  # unchanged by the drop-in


def test_under_the_unit_a_non_root_dcrond_finds_var_lib_and_etc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The unit's Environment= makes the non-root defaults the system paths."""
    specifiers = {"%S": "/var/lib", "%E": "/etc"}  # systemd's, for system units
    for assignment in " ".join(_directives(UNIT)["Environment"]).split():
        key, _, value = assignment.partition("=")
        monkeypatch.setenv(key, specifiers.get(value, value))
    monkeypatch.setattr(os, "geteuid", lambda: 999)
    assert default_data_dir() == Path("/var/lib/dcrond")
    assert default_tls_dir() == Path("/etc/dcrond/tls")


def _install(tmp_path: Path, *, drop_in: bool) -> Path:
    """A copy of the unit whose ExecStart names a program that exists here."""
    exe = Path(sys.executable).with_name("dcrond")
    text = UNIT.read_text(encoding="utf-8")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={exe}", text, count=1, flags=re.M)
    unit = tmp_path / "dcrond.service"
    unit.write_text(text, encoding="utf-8")
    if drop_in:
        (tmp_path / "dcrond.service.d").mkdir()
        shutil.copy(DROP_IN, tmp_path / "dcrond.service.d" / DROP_IN.name)
    return unit


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@needs_analyze
@pytest.mark.parametrize("drop_in", [False, True], ids=["unit", "unit+jobs-as-users"])
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path, drop_in: bool) -> None:
    assert Path(sys.executable).with_name("dcrond").exists()
    unit = _install(tmp_path, drop_in=drop_in)
    res = _analyze("verify", "--man=no", unit.name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == ""
    assert res.stdout.strip() == ""


@needs_analyze
@pytest.mark.parametrize(
    ("drop_in", "most"), [(False, 2.5), (True, 4.0)], ids=["unit", "unit+jobs-as-users"]
)
def test_systemd_analyze_security_rates_the_unit_ok(
    tmp_path: Path, drop_in: bool, most: float
) -> None:
    """Exposure under the threshold of 6.0; the tighter bounds catch a lost directive."""
    unit = _install(tmp_path, drop_in=drop_in)
    res = _analyze("security", "--offline=yes", "--threshold=60", unit.name, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"Overall exposure level for dcrond\.service: (\d+\.\d)", res.stdout)
    assert m, res.stdout
    assert float(m.group(1)) <= most


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_file_creates_the_service_user_with_the_state_dir_as_home(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    res = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    assert users["dcrond"][5] == "/var/lib/dcrond"
    assert users["dcrond"][6] == "/usr/sbin/nologin"


# --- the pieces, in process -----------------------------------------------------------------------


def test_log_lines_split_into_event_and_fields() -> None:
    assert parse_event("run_started job=backup run=backup@2026-11-22T03:00Z node=h2") == (
        "run_started",
        {"job": "backup", "run": "backup@2026-11-22T03:00Z", "node": "h2"},
    )
    # %r-quoted values keep their spaces and quotes; "key=value: text" loses only the colon
    assert parse_event("""raft_peer_unreachable peer=b reason="it's gone" n=3""") == (
        "raft_peer_unreachable",
        {"peer": "b", "reason": "it's gone", "n": "3"},
    )
    assert parse_event("run_claim_refused run=j@1: not leader")[1] == {"run": "j@1"}
    assert parse_event("watcher failed on RunScheduled") == (None, {})


def _record(msg: str, level: int = logging.ERROR, *, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            info = sys.exc_info()
    return logging.LogRecord("dcrond.rpc", level, __file__, 1, msg, (), info)


def test_journal_lines_carry_the_priority_on_every_line_of_a_traceback() -> None:
    text = JournalFormatter().format(_record("rpc_handler_crashed method=x", exc=True))
    lines = text.split("\n")
    assert lines[0] == "<3>rpc_handler_crashed method=x"
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert JournalFormatter().format(_record("a_b", logging.DEBUG)) == "<7>a_b"
    assert JournalFormatter().format(_record("a_b", logging.WARNING)) == "<4>a_b"


def test_json_lines_hold_event_fields_message_and_exception() -> None:
    out = json.loads(JsonFormatter().format(_record("rpc_handler_crashed method=x", exc=True)))
    assert (out["event"], out["method"], out["level"], out["logger"]) == (
        "rpc_handler_crashed",
        "x",
        "error",
        "dcrond.rpc",
    )
    assert out["msg"] == "rpc_handler_crashed method=x"
    assert "RuntimeError: boom" in out["exc"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["ts"])


def test_journal_format_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as err, (tmp_path / "other").open("w") as other:
        st = os.fstat(err.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert default_format(err, env) == "journal"
        # inherited by a process whose stderr went elsewhere: no prefixes
        assert default_format(other, env) == "plain"
        assert default_format(err, {}) == "plain"
        assert default_format(err, {"JOURNAL_STREAM": "junk"}) == "plain"


def test_a_terminal_gets_rich_showing_the_bare_event_line() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            assert default_format(tty, {}) == "rich"
    finally:
        os.close(master)
    handler = make_handler("rich", io.StringIO())
    # its own formatter, so logging.basicConfig does not add "ERROR:dcrond.rpc:"
    assert handler.formatter is not None
    assert handler.format(_record("rpc_frame_rejected reason=x")) == "rpc_frame_rejected reason=x"


def test_notifier_reads_the_environment_the_way_systemd_means_it() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000"}
    assert Notifier.from_environ(env, pid=7).watchdog_interval == 1.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "7"}, pid=7).watchdog_interval == 1.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "8"}, pid=7).watchdog_interval is None
    assert Notifier.from_environ({**env, "WATCHDOG_USEC": "0"}, pid=7).watchdog_interval is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "2000000"}).watchdog_interval is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:9"}).address is None
    quiet = Notifier.from_environ({})
    assert quiet.send("READY=1") is False
    # a socket nobody listens on: logged once, never raised
    gone = Notifier("/nonexistent/notify")
    assert gone.send("READY=1") is False
    gone.close()


# --- the daemon's side ---------------------------------------------------------------------------


@dataclass
class Message:
    """One datagram the daemon sent, and when it arrived."""

    at: float
    text: str

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.partition("=")[::2] for line in self.text.split("\n") if line)


class NotifySocket:
    """A datagram socket standing in for systemd's; ``address`` goes into ``$NOTIFY_SOCKET``."""

    def __init__(self, *, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            self.address = f"@dcrond-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + self.address[1:])
        else:
            # a short folder: AF_UNIX paths are limited to 107 bytes
            self._dir = tempfile.mkdtemp(prefix="dcrond-sd-")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.messages: list[Message] = []

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir)

    def collect(self, seconds: float) -> None:
        """Receive whatever arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.messages.append(Message(time.monotonic(), data.decode()))

    def wait_for(self, key: str, value: str | None = None, *, seconds: float = 20) -> Message:
        """The first message (already received or arriving within ``seconds``) with ``key``."""
        deadline = time.monotonic() + seconds
        seen = 0
        while True:
            for m in self.messages[seen:]:
                if key in m.fields and (value is None or value in m.fields[key]):
                    return m
            seen = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value or ''} in {[m.text for m in self.messages]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(Message(time.monotonic(), data.decode()))


@pytest.fixture(params=[False, True], ids=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    """Each kind of ``$NOTIFY_SOCKET`` in turn."""
    ns = NotifySocket(abstract=request.param)
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def path_socket() -> Iterator[NotifySocket]:
    ns = NotifySocket(abstract=False)
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    ns = NotifySocket(abstract=True)
    try:
        yield ns
    finally:
        ns.close()


class Dcrond:
    """A dcrond process started the way systemd starts it: env set, stderr to a file.

    ``own_watchdog`` sets ``$WATCHDOG_PID`` to the daemon's pid (a shell
    exports its own ``$$`` and then ``exec``s dcrond, as systemd's fork does).
    """

    def __init__(self, tmp_path: Path, config: str | None = None) -> None:
        self.api, raft, gossip = free_ports(3)
        self.endpoint = f"127.0.0.1:{self.api}"
        self.config = tmp_path / "dcrond.toml"
        self.config.write_text(
            config
            or (
                f"[node]\nname = 'solo'\ndata_dir = '{tmp_path / 'data'}'\n"
                f"[api]\nlisten = '{self.endpoint}'\n[raft]\nlisten = '127.0.0.1:{raft}'\n"
                f"[cluster]\ngossip_listen = '127.0.0.1:{gossip}'\n"
            ),
            encoding="utf-8",
        )
        self.log = tmp_path / "dcrond.log"
        self.log.touch()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], *args: str, own_watchdog: bool = False) -> None:
        wrapper = 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"' if own_watchdog else 'exec "$@"'
        cmd = [sys.executable, "-m", "dcrond", "--config", str(self.config), *args]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", wrapper, "sh", *cmd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **env},
            )

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dcrond.ctl", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "DCRON_ENDPOINT": self.endpoint},
        )

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


@pytest.fixture
def dcrond(tmp_path: Path) -> Iterator[Dcrond]:
    d = Dcrond(tmp_path)
    try:
        yield d
    finally:
        d.kill()


def test_ready_after_the_api_listens_then_status_then_stopping_on_sigterm(
    dcrond: Dcrond, notify_socket: NotifySocket
) -> None:
    # a watchdog meant for another process (WATCHDOG_PID) must be left alone
    dcrond.start(
        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
        "--log-format=json",
    )
    ready = notify_socket.wait_for("READY", "1")
    # READY=1 means "serving": the API accepts at once, and answers
    socket.create_connection(("127.0.0.1", dcrond.api), timeout=1).close()
    res = dcrond.ctl("-o", "json", "cluster", "status")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["node"] == "solo"
    # before READY: only a STATUS saying what it is doing
    before = notify_socket.messages[: notify_socket.messages.index(ready)]
    assert [set(m.fields) for m in before] == [{"STATUS"}] * len(before)
    assert before[0].fields["STATUS"].startswith("starting")
    # READY carries the first status line: role and term, jobs, runs, peers
    assert re.fullmatch(
        r"leader, term \d+; 0 jobs; 0 runs running here; peers 0/0 connected",
        ready.fields["STATUS"],
    ), ready.fields["STATUS"]

    # a change shows up in a later STATUS line
    made = dcrond.ctl("job", "create", "nightly", "--schedule", "@daily", "--command", "true")
    assert made.returncode == 0, made.stderr
    assert "; 1 job;" in notify_socket.wait_for("STATUS", "1 job", seconds=10).fields["STATUS"]

    assert dcrond.proc is not None
    dcrond.proc.send_signal(signal.SIGTERM)
    stopping = notify_socket.wait_for("STOPPING", "1")
    assert stopping.fields["STATUS"].startswith("stopping")
    assert dcrond.proc.wait(timeout=60) == 0
    dcrond.proc = None
    notify_socket.collect(0.2)
    assert not [m for m in notify_socket.messages if "WATCHDOG" in m.fields]

    # --log-format=json: one object per line, stable event names, fields parsed out
    events = [json.loads(line) for line in dcrond.lines()]
    started = next(e for e in events if e["event"] == "dcrond_started")
    assert (started["level"], started["node"], started["api"]) == (
        "info",
        "solo",
        dcrond.endpoint,
    )
    assert started["ts"].endswith("Z")
    assert any(e["event"] == "dcrond_stopping" and e["signal"] == "SIGTERM" for e in events)


def test_watchdog_pings_at_half_the_period_and_logs_go_to_the_journal_with_priorities(
    dcrond: Dcrond,
) -> None:
    ns = NotifySocket(abstract=True)
    try:
        st = dcrond.log.stat()
        dcrond.start(
            {
                "NOTIFY_SOCKET": ns.address,
                "WATCHDOG_USEC": "1000000",
                "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            },
            own_watchdog=True,
        )
        ready = ns.wait_for("READY", "1")
        ns.collect(3.0)
        pings = [m.at for m in ns.messages if m.fields.get("WATCHDOG") == "1"]
        assert all(m.at >= ready.at for m in ns.messages if "WATCHDOG" in m.fields)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # every 0.5 s: about six in three seconds, never a gap of a whole period
        assert 5 <= len(pings) <= 8, gaps
        assert max(gaps) < 1.0, gaps
        assert min(gaps) > 0.4, gaps  # not faster than asked either
        assert dcrond.stop() == 0
    finally:
        ns.close()
    lines = dcrond.lines()
    assert any(line.startswith("<6>dcrond_started node=solo ") for line in lines), lines
    assert any(line.startswith("<6>dcrond_stopping signal=SIGTERM") for line in lines), lines
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines


def test_jobs_never_see_notify_socket_or_watchdog_variables(
    dcrond: Dcrond, abstract_socket: NotifySocket
) -> None:
    notify_socket = abstract_socket
    systemd_env = {
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "30000000",
        "INVOCATION_ID": uuid.uuid4().hex,
        "JOURNAL_STREAM": "8:12345",
        "LISTEN_FDS": "0",
    }
    dcrond.start(systemd_env, own_watchdog=True)
    notify_socket.wait_for("READY", "1")
    made = dcrond.ctl("job", "create", "printenv", "--schedule", "@yearly", "--command", "env")
    assert made.returncode == 0, made.stderr
    res = dcrond.ctl("-o", "json", "job", "trigger", "printenv", "--wait")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["state"] == "succeeded"
    logs = dcrond.ctl("run", "logs", run["id"])
    assert logs.returncode == 0, logs.stderr
    seen = dict(line.partition("=")[::2] for line in logs.stdout.splitlines() if "=" in line)
    assert seen["DCROND_RUN_ID"] == run["id"]  # it is the job's environment we are reading
    leaked = {k for k in seen if k in systemd_env or k.startswith(("WATCHDOG_", "LISTEN_"))}
    assert leaked == set()


def test_a_bad_config_exits_78_before_ready_with_an_error_line(
    dcrond: Dcrond, path_socket: NotifySocket
) -> None:
    notify_socket = path_socket
    dcrond.config.write_text("[node]\nnmae = 'typo'\n", encoding="utf-8")
    st = dcrond.log.stat()
    dcrond.start(
        {"NOTIFY_SOCKET": notify_socket.address, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    )
    assert dcrond.proc is not None
    assert dcrond.proc.wait(timeout=60) == EX_CONFIG
    dcrond.proc = None
    notify_socket.collect(0.1)
    assert not [m for m in notify_socket.messages if "READY" in m.fields]
    (line,) = dcrond.lines()
    assert line.startswith("<3>dcrond_config_invalid error=")
    assert "node.nmae: unknown key" in line


def test_a_watchdog_abort_leaves_the_event_loops_stack_in_the_log(
    dcrond: Dcrond, path_socket: NotifySocket
) -> None:
    """systemd ends a daemon that stopped pinging with SIGABRT (WatchdogSignal=): the main
    thread's stack is written, and the daemon dies of SIGABRT (dumping every thread's stack
    once crashed with SIGSEGV while a worker thread was writing the log)."""
    dcrond.start({"NOTIFY_SOCKET": path_socket.address})
    path_socket.wait_for("READY", "1")
    assert dcrond.proc is not None
    dcrond.proc.send_signal(signal.SIGABRT)
    assert dcrond.proc.wait(timeout=30) == -signal.SIGABRT
    dcrond.proc = None
    text = dcrond.log.read_text(errors="replace")
    assert "Fatal Python error: Aborted" in text
    assert re.search(r'File ".*dcrond[/\\]daemon\.py", line \d+ in main', text), text
