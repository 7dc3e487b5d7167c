"""`mlmodel operator`: run the operator (kopf with our handlers) with kopf's usual `run` flags."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

import kopf
import pydantic
from mlmodel_cli.terminal import log_format_for

from mlmodel_operator.handlers import register
from mlmodel_operator.kube import KubeClient
from mlmodel_operator.peering import DEFAULT_PEERING_NAME, Peering, own_identity
from mlmodel_operator.reconcile import Context
from mlmodel_operator.settings import OperatorSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlmodel operator",
        description="Reconcile MLModel resources into Deployments, Services, HPAs, PDBs and "
        "ServiceMonitors. Settings come from MLMODEL_OPERATOR_* variables; the flags are kopf's.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="serve this namespace (repeatable; globs allowed); default: MLMODEL_OPERATOR_NAMESPACE, "
        "else every namespace",
    )
    parser.add_argument(
        "--standalone", action="store_true", default=None, help="no peering with other replicas"
    )
    parser.add_argument("--dev", action="store_true", help="peering priority 666 (development)")
    parser.add_argument(
        "-L",
        "--liveness",
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument("-P", "--peering", metavar="NAME", help="name of the peering object")
    parser.add_argument("-p", "--priority", type=int, help="peering priority")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-d", "--debug", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument(
        "--log-format",
        choices=[f.name.lower() for f in kopf.LogFormat],
        help=(
            "kopf log format (default: MLMODEL_OPERATOR_LOG_FORMAT, json or text=full; unset, "
            "full on a terminal and json elsewhere)"
        ),
    )
    parser.add_argument("--log-refkey", help="key of the object reference in JSON logs")
    parser.add_argument("--log-prefix", action=argparse.BooleanOptionalAction, default=None)
    return parser


def _peering(
    args: argparse.Namespace, identity: str, clusterwide: bool, namespaces: list[str]
) -> Peering:
    """What kopf's run() makes of the peering flags, for the resync loop to follow."""
    if args.standalone:
        return Peering(name=None, identity=identity)
    plain = tuple(ns for ns in namespaces if not set(ns) & set("*?[!"))
    return Peering(
        name=args.peering or DEFAULT_PEERING_NAME,
        identity=identity,
        priority=666 if args.dev else (args.priority or 0),
        mandatory=args.peering is not None,
        namespaces=() if clusterwide else plain,
    )


def kopf_log_format(flag: str | None, setting: str | None, stream: IO[str]) -> str:
    """kopf's log format: the flag's, else the setting's (text is kopf's "full"), else text when
    `stream` (where kopf logs: stderr) is a terminal and JSON lines anywhere else."""
    if flag:
        return flag
    return "json" if (setting or log_format_for(stream)) == "json" else "full"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = OperatorSettings()
    except pydantic.ValidationError as error:
        # Inputs are hidden from these messages (a database URL holds a password).
        print(f"mlmodel operator: invalid MLMODEL_OPERATOR_* settings: {error}", file=sys.stderr)
        return 2

    log_format = kopf_log_format(args.log_format, settings.log_format, sys.stderr)
    kopf.configure(
        debug=args.debug or settings.log_level == "debug",
        verbose=args.verbose,
        quiet=args.quiet or settings.log_level in ("warning", "error"),
        log_format=kopf.LogFormat[log_format.upper()],
        log_refkey=args.log_refkey,
        log_prefix=args.log_prefix,
    )

    namespaces = list(args.namespace) or ([settings.namespace] if settings.namespace else [])
    clusterwide = args.all_namespaces or not namespaces
    identity = own_identity(os.environ)
    ctx = Context(
        settings=settings,
        kube=KubeClient(
            timeout_seconds=settings.api_timeout_seconds,
            crd_check_interval_seconds=settings.crd_check_interval_seconds,
            max_connections=settings.max_api_connections,
        ),
        peering=_peering(args, identity, clusterwide, namespaces),
    )
    registry = kopf.OperatorRegistry()
    register(registry, ctx, namespaces)
    kopf.run(
        registry=registry,
        identity=identity,  # type: ignore[arg-type]  # kopf.Identity is a NewType of str
        clusterwide=clusterwide,
        namespaces=namespaces,
        standalone=args.standalone,
        priority=666 if args.dev else args.priority,
        peering_name=args.peering,
        liveness_endpoint=args.liveness,
    )
    return 0
