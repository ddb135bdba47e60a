"""
C{agw-health}: print a running gateway's backend health as a table.

    agw-health                                # http://127.0.0.1:9901
    agw-health --admin http://127.0.0.1:9901
    agw-health --json                         # the raw /health document

Exit status: 0 when the admin endpoint answered with a health report, 2 when
it could not be reached or did not answer with one.  Unhealthy backends do
not change the exit status: this is a viewer, not a check.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["COLUMNS", "fetchHealth", "formatTable", "main", "rows"]

DEFAULT_ADMIN = "http://127.0.0.1:9901"
COLUMNS = ("POOL", "SETTINGS", "SERVER", "HEALTH", "REASON", "LAST CHANGE")


class HealthUnavailable(Exception):
    """The admin endpoint could not be reached or gave no health report."""


def healthURL(admin: str) -> str:
    admin = admin.strip()
    if "://" not in admin:
        admin = "http://" + admin
    return admin.rstrip("/") + "/health"


def fetchHealth(admin: str, timeout: float = 5.0) -> dict[str, Any]:
    url = healthURL(admin)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except urllib.error.HTTPError as e:
        raise HealthUnavailable(f"{url} answered {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise HealthUnavailable(f"cannot reach {url}: {reason}") from e
    try:
        document = json.loads(data)
    except ValueError as e:
        raise HealthUnavailable(f"{url} did not answer with JSON: {e}") from e
    if not isinstance(document, dict) or not isinstance(document.get("backendAddressPools"), list):
        raise HealthUnavailable(f"{url} did not answer with a backend health report")
    return document


def rows(document: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per server, in the document's order."""
    out: list[tuple[str, ...]] = []
    for pool in document.get("backendAddressPools", []):
        poolName = str(pool.get("backendAddressPool", {}).get("name", "-"))
        for coll in pool.get("backendHttpSettingsCollection", []):
            settingsName = str(coll.get("backendHttpSettings", {}).get("name", "-"))
            for server in coll.get("servers", []):
                health = str(server.get("health", "-"))
                if server.get("draining"):
                    health += " (draining)"
                out.append(
                    (
                        poolName,
                        settingsName,
                        str(server.get("address", "-")),
                        health,
                        str(server.get("healthProbeLog") or "-"),
                        str(server.get("lastChange") or "-"),
                    )
                )
    return out


def formatTable(document: dict[str, Any]) -> str:
    """The table C{agw-health} prints (columns L{COLUMNS})."""
    table = [COLUMNS, *rows(document)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    if len(table) == 1:
        lines.append("(no backend pools in use)")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(
        prog="agw-health", description="Show a running agw gateway's backend health."
    )
    parser.add_argument(
        "--admin",
        default=DEFAULT_ADMIN,
        help=f"base URL of the gateway's admin endpoint (default {DEFAULT_ADMIN})",
    )
    parser.add_argument("--json", action="store_true", help="print the raw /health JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    args = parser.parse_args(argv)
    try:
        document = fetchHealth(args.admin, args.timeout)
    except HealthUnavailable as e:
        err.write(f"agw-health: {e}\n")
        err.write("agw-health: is the gateway running with [gateway] admin set?\n")
        return 2
    if args.json:
        out.write(json.dumps(document, indent=2) + "\n")
    else:
        out.write(formatTable(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
