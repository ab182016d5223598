"""sessions [--instance I] [--client ADDR]: every open console session across the proxies."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK

from consoleauth.ctl.common import call, emit, table

NAME = "sessions"
HELP = "List the open console sessions of every proxy (as they report them to consoleauth)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--instance", dest="instance_uuid", metavar="INSTANCE_UUID",
                        help="Only this instance's sessions.")
    parser.add_argument("--client", metavar="ADDR", help="Only this client address's sessions.")


def fetch(config: Config, **filters: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                    "list_sessions", after=after, **filters)
        rows += page["sessions"]
        if not page["more"] or not page["sessions"]:
            return rows
        after = page["sessions"][-1]["session_id"]


def run(config: Config, args: argparse.Namespace) -> int:
    rows = fetch(config, instance_uuid=args.instance_uuid, client=args.client)
    rows.sort(key=lambda r: (r["started"], r["session_id"]))
    human = table(("Session", "Proxy", "Kind", "Instance", "Client", "Started", "Duration",
                   "Up", "Down"),
                  [(r["session_id"], f"{r['proxy']['service']}@{r['proxy']['host']}:"
                    f"{r['proxy']['pid']}", r["kind"], r["instance_uuid"], r["client"],
                    datetime.fromtimestamp(r["started"], UTC).isoformat(timespec="seconds"),
                    f"{r['duration_s']:.0f}s", r["bytes_up"], r["bytes_down"]) for r in rows])
    emit(args, human if rows else "No open sessions.", rows)
    return EXIT_OK
