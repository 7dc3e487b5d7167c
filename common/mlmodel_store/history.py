"""``mlmodel history NAME``: the rollout history of one MLModel, newest first."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mlmodel_spec.runtime_settings import ENV_PREFIX
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .changes import describe_changes
from .database import Database
from .queries import Rollout, rollout_history
from .urls import default_cache_dir

COLUMNS = (
    "GENERATION",
    "STARTED",
    "STATUS",
    "READY AFTER",
    "DIGEST",
    "REPLICAS",
    "CHANGES",
    "BY",
    "REASON",
)


class HistorySettings(BaseSettings):
    """Where the history is read from: the same variables as the runtime's settings."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL; empty: SQLite in cache_dir."
    )
    cache_dir: Path = Field(default_factory=default_cache_dir, description="Holds the SQLite file.")


def rollout_status(rollout: Rollout, superseded: bool) -> str:
    if rollout.rolled_back_to is not None:
        return f"RolledBack to {rollout.rolled_back_to}"
    if rollout.ready_at is not None:
        return "Ready"
    if rollout.failed_at is not None:
        return "Failed"
    return "Superseded" if superseded else "Progressing"


def history_rows(rollouts: Sequence[Rollout]) -> list[tuple[str, ...]]:
    """Table cells for rollouts given newest first (only the newest can still be progressing)."""
    rows = []
    for index, rollout in enumerate(rollouts):
        ready_after = ""
        if rollout.ready_at is not None:
            ready_after = f"{(rollout.ready_at - rollout.started_at).total_seconds():.1f}s"
        rows.append(
            (
                str(rollout.generation),
                _time(rollout.started_at),
                rollout_status(rollout, superseded=index > 0),
                ready_after,
                (rollout.sha256 or "unverified")[:12],
                "" if rollout.desired_replicas is None else str(rollout.desired_replicas),
                describe_changes(rollout.changes),
                rollout.changed_by or "",
                " ".join(filter(None, [rollout.reason, rollout.message])),
            )
        )
    return rows


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in (header, *rows)
    ]
    return "\n".join(lines) + "\n"


def history_json(rollouts: Sequence[Rollout]) -> str:
    def encode(rollout: Rollout) -> dict:
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in rollout.__dict__.items()
        }

    return json.dumps([encode(rollout) for rollout in rollouts], indent=2) + "\n"


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mlmodel history",
        description="Print an MLModel's rollout history from the metadata store, newest first.",
    )
    parser.add_argument("name", help="the MLModel's name")
    parser.add_argument(
        "-n", "--namespace", default="default", help="its namespace (default: default)"
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: $MLMODEL_DATABASE_URL, else SQLite in the cache dir)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--limit", type=int, default=None, help="show at most this many rollouts")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = HistorySettings()
    database = Database.from_settings(
        args.database_url or settings.database_url,
        settings.cache_dir,
        application_name="mlmodel-history",
    )
    try:
        with database.session(write=False, create=False) as session:
            rollouts = rollout_history(session, args.namespace, args.name, limit=args.limit)
    except FileNotFoundError as error:
        print(f"mlmodel history: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - report any driver error without the password
        reason = database.scrub(str(error)).strip()
        print(f"mlmodel history: cannot read {database.redacted_url}: {reason}", file=sys.stderr)
        return 2
    finally:
        database.close()
    if not rollouts:
        print(
            f"mlmodel history: no rollouts recorded for {args.namespace}/{args.name}",
            file=sys.stderr,
        )
        return 1
    if args.output == "json":
        sys.stdout.write(history_json(rollouts))
    else:
        sys.stdout.write(format_table(COLUMNS, history_rows(rollouts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
