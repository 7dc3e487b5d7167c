"""The `mlmodel` command: one entry point for the runtime, the operator and the store.

Each subcommand is implemented (and parses its own arguments) in the package it belongs to,
imported only when used, so neither package imports the other and each image runs the commands
of the packages it carries.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module with a main(argv), help). `serve` is handed its own name too: the runtime's
# parser reads `serve [options]`.
COMMANDS = {
    "serve": ("mlmodel_runtime.cli", "serve one model locally (or in the runtime container)"),
    "render": (
        "mlmodel_operator.render",
        "print the Kubernetes objects the operator creates for an MLModel",
    ),
    "operator": ("mlmodel_operator.main", "run the operator (kopf) against the current cluster"),
    "history": ("mlmodel_store.history", "show deployment history from the metadata store"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlmodel",
        description="Serve scikit-learn models over the Open Inference Protocol, on Kubernetes or locally.",
        epilog="`mlmodel COMMAND --help` describes each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in COMMANDS:
        _parser().parse_args(arguments)  # prints the help, or the usage error, and exits
        return 2
    name = arguments[0]
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name + ".").startswith(error.name + "."):
            raise
        print(f"mlmodel {name}: not installed here ({module_name} is missing)", file=sys.stderr)
        return 2
    # Handed over whole (flags included), so e.g. kopf options reach the operator untouched.
    return int(module.main(arguments if name == "serve" else arguments[1:]) or 0)
