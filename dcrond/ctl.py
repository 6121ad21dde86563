"""``dcronctl``: the command-line client (noun, then verb).

Exit codes: 0 ok; 1 request failed or not found; 2 usage; 3 daemon
unreachable; 4 ``job trigger --wait`` ended with the job failing; 78 invalid
config. Errors are one line on stderr: ``dcronctl: error: …``.

``-o json`` prints exactly the API's JSON (never through rich); ``-o name``
prints one id per line for ``xargs``; ``table`` and ``wide`` are rich tables
with relative times. Where the daemon is: ``--endpoint``, else
``$DCRON_ENDPOINT``, else the local default (what ``dcrond`` listens on with
no config).

Mutual TLS (docs/tls.md): ``--ca``/``--cert``/``--key`` (or ``$DCRON_CA``,
``$DCRON_CERT``, ``$DCRON_KEY``) turn it on; without them dcronctl uses TLS
when the default TLS folder holds ``ca.crt`` and ``client.crt`` (or, on a
node, ``node.crt``); ``--no-tls`` forces plain text. ``dcronctl ca …`` is the
cluster's certificate authority and needs no daemon.
"""

from __future__ import annotations

import argparse
import getpass
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from dcrond import _ctl_render as render
from dcrond._ctl_tls import add_ca_parser, add_tls_options, client_tls, run_ca
from dcrond.config import DEFAULT_API_PORT, parse_address
from dcrond.errors import ConfigError, DcronError, InvalidRequest, TlsError, Unavailable
from dcrond.rpc import RpcClient

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_JOB_FAILED = 1, 2, 3, 4
FINAL_STATES = {"succeeded", "failed", "timed_out", "killed", "skipped", "lost"}

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90`` / ``90s`` / ``5m`` / ``1h30m`` / ``250ms`` -> seconds."""
    rest, total, number = text.strip(), 0.0, ""
    if not rest:
        raise InvalidRequest("invalid duration '': use e.g. 30s, 5m, 1h30m")
    if rest.replace(".", "", 1).isdigit():
        return float(rest)
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if rest.startswith("ms", i) else ch
        if unit not in _UNITS or not number:
            raise InvalidRequest(f"invalid duration {text!r}: use e.g. 30s, 5m, 1h30m")
        total += float(number) * _UNITS[unit]
        number = ""
        i += len(unit)
    if number:
        raise InvalidRequest(f"invalid duration {text!r}: a number needs a unit (s, m, h, d)")
    return total


def _pairs(items: list[str] | None, what: str) -> dict[str, str] | None:
    if items is None:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def job_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The job fields given on the command line (only those given)."""
    spec: dict[str, Any] = {}
    simple = {
        "schedule": "schedule",
        "timezone": "timezone",
        "command": "command",
        "interpreter": "interpreter",
        "dir": "working_dir",
        "user": "user",
        "retries": "retries",
        "concurrency": "concurrency",
        "catch_up": "catch_up",
        "catch_up_cap": "catch_up_limit",
        "description": "description",
    }
    for arg, field in simple.items():
        value = getattr(args, arg, None)
        if value is not None:
            spec[field] = value
    for arg, field in (("timeout", "timeout"), ("retry_backoff", "backoff")):
        value = getattr(args, arg, None)
        if value is not None:
            spec[field] = parse_duration(value)
    if getattr(args, "script", None) is not None:
        path = Path(args.script)
        try:
            spec["script"] = path.read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"cannot read --script {path}: {exc.strerror}") from None
        spec["script_name"] = path.name
    if getattr(args, "script_url", None) is not None:
        spec["script_url"] = args.script_url
    for arg, field in (("tag", "tags"), ("env", "env"), ("meta", "metadata")):
        pairs = _pairs(getattr(args, arg, None), f"--{arg}")
        if pairs is not None:
            spec[field] = pairs
    on = getattr(args, "on", None)
    if on is not None:
        spec["on"] = int(on) if on.isdigit() else on
    if getattr(args, "after", None) is not None:
        spec["after"] = list(args.after)
    if getattr(args, "arg", None) is not None:
        spec["args"] = list(args.arg)
    return spec


def _job_options(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument("--schedule", required=create, help="cron expression, @hourly, @every 30s")
    how = p.add_mutually_exclusive_group(required=create)
    how.add_argument("--command", help="a command line, run with /bin/sh -c")
    how.add_argument("--script", help="a script file to upload and run")
    how.add_argument(
        "--script-url",
        help="an object already in the cluster's object storage (under storage.url) to run; "
        "its bytes are pinned by sha256 when the version is made",
    )
    p.add_argument("--interpreter", help="bash, sh, python, ruby, or an absolute path")
    p.add_argument("--arg", action="append", help="an argument for the script (repeatable)")
    p.add_argument("--timezone", help="IANA time zone of the schedule (default UTC)")
    p.add_argument("--timeout", help="kill the run after this long (30s, 5m, 1h)")
    p.add_argument("--retries", type=int, help="retry a failed run this many times")
    p.add_argument("--retry-backoff", help="wait before the first retry (doubles each time)")
    p.add_argument("--concurrency", choices=["allow", "forbid", "replace"])
    p.add_argument("--catch-up", choices=["none", "latest", "all"])
    p.add_argument("--catch-up-cap", type=int, help="at most this many catch-up runs")
    p.add_argument("--tag", action="append", help="run only on hosts with tag K=V")
    p.add_argument(
        "--on",
        metavar="any|all|N",
        help="hosts per run: any (one, the default), all matching hosts, or N of them",
    )
    p.add_argument("--env", action="append", help="environment variable K=V (repeatable)")
    p.add_argument("--meta", action="append", help="free metadata K=V (repeatable)")
    p.add_argument("--dir", help="working directory")
    p.add_argument("--user", help="unix user to run as")
    p.add_argument("--after", action="append", help="run after this job succeeds")
    p.add_argument("--description")


class _AfterVerb(argparse.ArgumentParser):
    """A parser whose options default to *absent*, so a value the user gave before the
    noun is kept unless the same option is given again after the verb."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        kwargs["default"] = argparse.SUPPRESS
        return super().add_argument(*args, **kwargs)


def global_options(ap: argparse.ArgumentParser) -> None:
    """The options every daemon command takes, before the noun or after the verb."""
    ap.add_argument("--endpoint", help="host:port of a dcrond (default $DCRON_ENDPOINT or local)")
    ap.add_argument("-o", "--output", choices=["table", "wide", "json", "name"], default="table")
    ap.add_argument(
        "--stale",
        action="store_true",
        help="read this node's copy without asking the leader (faster; may lag; works "
        "without a leader)",
    )
    add_tls_options(ap)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree.

    The global options (``global_options``) are defined once and accepted both
    before the noun (``dcronctl -o json job list``) and after the verb
    (``dcronctl job list -o json``); given in both places, the later one wins.
    """
    ap = argparse.ArgumentParser(prog="dcronctl", description="manage dcrond")
    global_options(ap)
    late = _AfterVerb(add_help=False)
    global_options(late)
    nouns = ap.add_subparsers(dest="noun", required=True, metavar="{job,run,node,cluster,ca}")

    def verbs(noun: str, text: str) -> Any:
        return nouns.add_parser(noun, help=text).add_subparsers(dest="verb", required=True)

    def verb(noun: Any, name: str, text: str) -> argparse.ArgumentParser:
        """A verb; it takes the global options too."""
        parser: argparse.ArgumentParser = noun.add_parser(name, help=text, parents=[late])
        return parser

    job = verbs("job", "jobs")
    p = verb(job, "create", "create a job")
    p.add_argument("name")
    _job_options(p, create=True)
    p = verb(job, "update", "change some fields of a job")
    p.add_argument("name")
    _job_options(p, create=False)
    for name, text in (
        ("get", "show a job"),
        ("delete", "delete a job"),
        ("pause", "stop scheduling a job"),
        ("resume", "schedule a paused job again"),
        ("history", "every version of a job and what changed"),
    ):
        verb(job, name, text).add_argument("name")
    p = verb(job, "trigger", "run a job now")
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="wait for the run to end")
    p = verb(job, "next", "the next instants a job will run")
    p.add_argument("name")
    p.add_argument("-n", type=int, default=10)
    verb(job, "list", "every job")

    run = verbs("run", "runs of jobs")
    p = verb(run, "list", "runs, newest first")
    p.add_argument("--job")
    p.add_argument("--state")
    p.add_argument("--limit", type=int, default=50)
    verb(run, "get", "one run and its attempts").add_argument("id")
    p = verb(run, "logs", "a run's output")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing while it runs")
    verb(run, "kill", "stop a running run").add_argument("id")

    node = verbs("node", "hosts")
    verb(node, "list", "every host, up or down")
    cluster = verbs("cluster", "the cluster")
    verb(cluster, "status", "leader, term, commit index, voters and learners")
    add_ca_parser(nouns)
    return ap


#: methods whose changes are recorded with who made them
_RECORDS_ACTOR = frozenset(
    ["job.create", "job.update", "job.delete", "job.pause", "job.resume", "job.trigger", "run.kill"]
)


def actor() -> str:
    """Who is asking: the local user name (over TLS the server uses the certificate's name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


#: methods that read the job table (and take ``stale``)
_READS = frozenset(["job.get", "job.list", "job.history", "job.next", "run.list", "run.get"])


class Session:
    """One connection to dcrond for the length of a command."""

    def __init__(self, client: RpcClient, *, stale: bool = False) -> None:
        self.client = client
        self.stale = stale

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        params = dict(params or {})
        if self.stale and method in _READS:
            params["stale"] = True
        if method in _RECORDS_ACTOR:
            params["actor"] = actor()
        with trio.fail_after(60):
            return await self.client.call(method, params)


async def _with_session(
    endpoint: tuple[str, int],
    fn: Callable[[Session], Any],
    ssl_context: ssl.SSLContext | None = None,
    stale: bool = False,
) -> Any:
    client = await RpcClient.connect(*endpoint, ssl_context=ssl_context)
    failed: DcronError | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                result = await fn(Session(client, stale=stale))
            except DcronError as exc:  # raised here, not as an ExceptionGroup from the nursery
                failed = exc
            nursery.cancel_scope.cancel()
        if failed is not None:
            raise failed
        return result
    finally:
        await client.aclose()


async def _follow_logs(s: Session, run_id: str, follow: bool) -> None:
    offset = 0
    while True:
        chunk = await s.call("run.logs", {"id": run_id, "offset": offset})
        data: bytes = chunk["data"]
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            offset += len(data)
        if chunk["done"] or not follow:
            return
        if not data:
            await trio.sleep(0.2)


async def _wait_run(s: Session, run: dict[str, Any]) -> dict[str, Any]:
    while run["state"] not in FINAL_STATES:
        await trio.sleep(0.2)
        run = await s.call("run.get", {"id": run["id"]})
    return run


async def dispatch(args: argparse.Namespace, s: Session) -> int:
    """Run one command against the daemon; returns the exit code."""
    noun, verb, out = args.noun, args.verb, args.output
    if noun == "job":
        if verb in ("create", "update"):
            spec = job_spec(args)
            if verb == "update" and not spec:
                raise InvalidRequest("nothing to change: give at least one option")
            before = await s.call("job.get", {"name": args.name}) if verb == "update" else None
            after = await s.call(f"job.{verb}", {"name": args.name, "spec": spec})
            if before is not None and after.get("version") == before.get("version"):
                what = "the object's content is the same" if "script_url" in spec else "no change"
                sys.stderr.write(
                    f"dcronctl: job {args.name} unchanged ({what}): still version "
                    f"{after.get('version')}\n"
                )
            render.job(after, out)
        elif verb in ("get", "pause", "resume"):
            render.job(await s.call(f"job.{verb}", {"name": args.name}), out)
        elif verb == "delete":
            result = await s.call("job.delete", {"name": args.name})
            render.message(result, out, f"job {args.name} deleted")
        elif verb == "history":
            render.history(await s.call("job.history", {"name": args.name}), out)
        elif verb == "list":
            render.jobs(await s.call("job.list"), out)
        elif verb == "next":
            render.instants(await s.call("job.next", {"name": args.name, "n": args.n}), out)
        elif verb == "trigger":
            run = await s.call("job.trigger", {"name": args.name})
            ids = run.get("runs") or [run["id"]]  # one per host for a job on several hosts
            runs = [run] + [await s.call("run.get", {"id": i}) for i in ids[1:]]
            if args.wait:
                runs = [await _wait_run(s, r) for r in runs]
            if len(runs) == 1:
                render.run(runs[0], out)
            else:  # -o json: a list, as run list prints
                render.runs(runs, out)
            if args.wait and any(r["state"] != "succeeded" for r in runs):
                return EXIT_JOB_FAILED
    elif noun == "run":
        if verb == "list":
            params = {"job": args.job, "state": args.state, "limit": args.limit}
            render.runs(await s.call("run.list", params), out)
        elif verb == "get":
            render.run(await s.call("run.get", {"id": args.id}), out)
        elif verb == "logs":
            await _follow_logs(s, args.id, args.follow)
        elif verb == "kill":
            render.run(await s.call("run.kill", {"id": args.id}), out)
    elif noun == "node":
        render.nodes(await s.call("node.list"), out)
    elif noun == "cluster":
        render.cluster(await s.call("cluster.status"), out)
    return 0


def _error(text: str) -> None:
    sys.stderr.write(f"dcronctl: error: {text}\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dcronctl``."""
    args = build_parser().parse_args(argv)
    try:
        if args.noun == "ca":
            return run_ca(args)
        text = args.endpoint or os.environ.get("DCRON_ENDPOINT") or f"127.0.0.1:{DEFAULT_API_PORT}"
        endpoint = parse_address(text, "--endpoint")
        if args.noun == "job" and args.verb in ("create", "update"):
            job_spec(args)  # bad input is refused before anything is sent
        context = client_tls(args)
        return int(
            trio.run(_with_session, endpoint, lambda s: dispatch(args, s), context, args.stale)
        )
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except TlsError as exc:
        _error(f"{exc} (check --ca/--cert/--key or $DCRON_CA/$DCRON_CERT/$DCRON_KEY; docs/tls.md)")
        return EXIT_UNREACHABLE
    except Unavailable as exc:
        _error(f"{exc} (is dcrond running? set --endpoint or $DCRON_ENDPOINT)")
        return EXIT_UNREACHABLE
    except trio.TooSlowError:
        _error("dcrond did not answer within 60s")
        return EXIT_UNREACHABLE
    except DcronError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
