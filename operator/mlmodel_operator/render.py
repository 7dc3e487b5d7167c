"""`mlmodel render FILE.yaml`: print the objects the operator would create, for review.

The output is exactly what `build_children` returns (the same builders the operator runs),
as multi-document YAML, so a GitOps pull request can show the Deployment an MLModel becomes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import yaml
from mlmodel_spec.resource import KIND, InvalidSpec

from mlmodel_operator.builders import build_children
from mlmodel_operator.settings import OperatorSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlmodel render",
        description="Print, as multi-document YAML, the Kubernetes objects the operator creates "
        "for each MLModel in FILE. Defaults come from MLMODEL_OPERATOR_* variables.",
    )
    parser.add_argument("file", type=Path, help="YAML file holding one or more MLModels ('-' for stdin)")
    parser.add_argument(
        "--image", help="default runtime image, as the operator's MLMODEL_OPERATOR_RUNTIME_IMAGE"
    )
    parser.add_argument(
        "--namespace", default="default", help="namespace for MLModels that name none (default: default)"
    )
    parser.add_argument(
        "--model-uri",
        help="render with this artifact URI instead of spec.model.uri (e.g. where a relative "
        "model.joblib will be uploaded)",
    )
    parser.add_argument(
        "--no-servicemonitor",
        action="store_true",
        help="leave the ServiceMonitor out, as the operator does when the Prometheus Operator "
        "CRDs are not installed",
    )
    parser.add_argument(
        "--no-httproute",
        action="store_true",
        help="leave the HTTPRoute of spec.gateway out, as the operator does when the Gateway API "
        "CRDs are not installed",
    )
    return parser


def _mlmodels(text: str) -> list[dict]:
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    return [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]


def _prepared(mlmodel: dict, namespace: str, model_uri: str | None) -> dict:
    prepared = {**mlmodel, "metadata": dict(mlmodel.get("metadata") or {})}
    prepared["metadata"].setdefault("namespace", namespace)
    if model_uri:
        spec = dict(prepared.get("spec") or {})
        spec["model"] = {**(spec.get("model") or {}), "uri": model_uri}
        prepared["spec"] = spec
    return prepared


def render(
    text: str, settings: OperatorSettings, *, namespace: str = "default",
    model_uri: str | None = None, servicemonitor_supported: bool = True,
    httproute_supported: bool = True,
) -> list[dict]:
    """Every child of every MLModel in `text`, in apply order; raises InvalidSpec or ValueError."""
    mlmodels = _mlmodels(text)
    if not mlmodels:
        raise ValueError(f"no document of kind {KIND} found")
    children: list[dict] = []
    for mlmodel in mlmodels:
        prepared = _prepared(mlmodel, namespace, model_uri)
        children.extend(
            build_children(
                prepared,
                settings,
                servicemonitor_supported=servicemonitor_supported,
                httproute_supported=httproute_supported,
            )
        )
    return children


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = _parser().parse_args(argv)
    settings = OperatorSettings()
    if args.image:
        settings = settings.model_copy(update={"runtime_image": args.image})
    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        children = render(
            text,
            settings,
            namespace=args.namespace,
            model_uri=args.model_uri,
            servicemonitor_supported=not args.no_servicemonitor,
            httproute_supported=not args.no_httproute,
        )
    except (OSError, yaml.YAMLError, InvalidSpec, ValueError) as error:
        print(f"mlmodel render: {args.file}: {error}", file=stderr)
        if isinstance(error, InvalidSpec) and "relative path" in str(error):
            print("mlmodel render: pass --model-uri URI to render with the URI the artifact "
                  "will be uploaded to", file=stderr)
        return 2
    yaml.safe_dump_all(children, stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
