"""``dcronctl``: the command-line client (noun, then verb).

Exit codes: 0 ok; 1 request failed or not found; 2 usage; 3 daemon
unreachable; 4 ``job trigger --wait`` ended with the job failing; 78 invalid
config. Errors are one line on stderr: ``dcronctl: error: …``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from dcrond.config import DEFAULT_API_PORT, parse_address
from dcrond.errors import ConfigError, DcronError, Unavailable
from dcrond.rpc import RpcClient

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

out = Console()
err = Console(stderr=True)


def _endpoint(arg: str | None) -> tuple[str, int]:
    text = arg or os.environ.get("DCRON_ENDPOINT") or f"127.0.0.1:{DEFAULT_API_PORT}"
    return parse_address(text, "--endpoint")


async def _call(endpoint: tuple[str, int], method: str, params: dict[str, Any]) -> Any:
    client = await RpcClient.connect(*endpoint)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            with trio.fail_after(30):
                result = await client.call(method, params)
            nursery.cancel_scope.cancel()
        return result
    finally:
        await client.aclose()


def _print(result: Any, output: str, title: str, columns: Sequence[str]) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return
    rows = result if isinstance(result, list) else [result]
    if output == "name":
        for row in rows:
            sys.stdout.write(f"{row.get('name') or row.get('node')}\n")
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col.replace("_", " ").upper())
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    out.print(table)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    ap = argparse.ArgumentParser(prog="dcronctl", description="manage dcrond")
    ap.add_argument("--endpoint", help="host:port of a dcrond (default $DCRON_ENDPOINT or local)")
    ap.add_argument("-o", "--output", choices=["table", "wide", "json", "name"], default="table")
    nouns = ap.add_subparsers(dest="noun", required=True)
    cluster = nouns.add_parser("cluster", help="the cluster as a whole").add_subparsers(
        dest="verb", required=True
    )
    cluster.add_parser("status", help="leader, term, commit index, voters and learners")
    node = nouns.add_parser("node", help="hosts").add_subparsers(dest="verb", required=True)
    node.add_parser("list", help="every host, up or down")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dcronctl``."""
    args = build_parser().parse_args(argv)
    try:
        endpoint = _endpoint(args.endpoint)
        if (args.noun, args.verb) == ("cluster", "status"):
            result = trio.run(_call, endpoint, "cluster.status", {})
            cols = [
                "cluster",
                "node",
                "role",
                "leader",
                "term",
                "commit_index",
                "applied_index",
                "voters",
                "learners",
            ]
            _print(result, args.output, "cluster", cols)
        elif (args.noun, args.verb) == ("node", "list"):
            result = trio.run(_call, endpoint, "node.list", {})
            _print(result, args.output, "nodes", ["name", "state", "raft_role", "version"])
    except ConfigError as exc:
        err.print(f"dcronctl: error: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except Unavailable as exc:
        err.print(
            f"dcronctl: error: {exc} (is dcrond running? try --endpoint)",
            markup=False,
            highlight=False,
        )
        return EXIT_UNREACHABLE
    except DcronError as exc:
        err.print(f"dcronctl: error: {exc}", markup=False, highlight=False)
        return EXIT_FAILED
    return 0
