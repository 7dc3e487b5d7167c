"""Checks an MLModel the way the API server would: CRD schema, strict unknown fields, CEL rules.

Shared by the CRD, builder and status tests; also holds the sample MLModels they use.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import celpy
import yaml
from openapi_schema_validator import OAS30Validator

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "mlmodel.yaml"
EXAMPLE_MLMODELS = sorted(REPO_ROOT.glob("examples/*/mlmodel.yaml"))
K8S_VERSION = "1.37.0"

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@cache
def crd() -> dict:
    return yaml.safe_load(CRD_PATH.read_text())


def version() -> dict:
    return crd()["spec"]["versions"][0]


def root_schema() -> dict:
    return version()["schema"]["openAPIV3Schema"]


def walk(schema: dict, path: str = ""):
    """Yields (path, node) for every schema node: properties, items and additionalProperties."""
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def _unknown_fields(schema: dict, value: object, path: str) -> list[str]:
    """What `kubectl apply` (strict field validation by default) refuses as unknown fields."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    errors = []
    if isinstance(value, dict) and "properties" in schema:
        if path == ".metadata":
            return []
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append(f"{path}.{key}: unknown field")
            else:
                errors += _unknown_fields(schema["properties"][key], item, f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            errors += _unknown_fields(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += _unknown_fields(schema["items"], item, f"{path}[{index}]")
    return errors


@cache
def _program(rule: str):
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_errors(schema: dict, value: object, path: str = "") -> list[str]:
    """Evaluates every x-kubernetes-validations rule whose field is present, like the API server."""
    errors = []
    for validation in schema.get("x-kubernetes-validations") or []:
        result = _program(validation["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path or '<root>'}: {validation['message']}")
    if isinstance(value, dict):
        for key, item in value.items():
            if key in (schema.get("properties") or {}):
                errors += cel_errors(schema["properties"][key], item, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += cel_errors(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{index}]")
    return errors


def schema_errors(schema: dict, value: object) -> list[str]:
    validator = OAS30Validator(schema)
    return [
        f".{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(value)
    ]


def mlmodel_errors(mlmodel: dict) -> list[str]:
    """Every reason the API server would refuse this MLModel; empty when it would accept it."""
    schema = root_schema()
    errors = schema_errors(schema, mlmodel) + _unknown_fields(schema, mlmodel, "")
    if errors:
        # The API server evaluates CEL only on objects that pass the schema.
        return errors
    return cel_errors(schema, mlmodel)


def mlmodel(name: str = "sentiment", spec: dict | None = None, **metadata) -> dict:
    return {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": "models", **metadata},
        "spec": spec if spec is not None else {"model": {"uri": "https://m.example.com/a.joblib", "sha256": DIGEST}},
    }


FULL_SPEC = {
    "model": {
        "uri": "s3://models/sentiment/model.joblib",
        "sha256": DIGEST,
        "format": "sklearn",
        "version": "1.2.0",
        "allowUnverified": False,
        "credentialsSecret": {"name": "s3-creds"},
        "s3EndpointUrl": "http://minio.minio:9000",
    },
    "runtime": {
        "image": "registry.example.com/runtime:1.0",
        "imagePullSecrets": [{"name": "regcred"}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi", "cpu": 2}},
        "env": [
            {"name": "MLMODEL_LOG_LEVEL", "value": "debug"},
            {"name": "EXTRA", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "workers": 2,
    },
    "autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60},
    "batching": {"maxBatchSize": 32, "maxWaitMs": 2.5},
    "service": {"port": 8000},
    "monitoring": {"serviceMonitor": True, "interval": "15s", "labels": {"release": "prometheus"}},
    "database": {"secretRef": {"name": "mlmodel-db", "key": "url"}},
    "predictionLogging": {"sampleRate": 0.1},
    "auth": {"secretRef": {"name": "tokens", "key": "tokens"}},
    "cache": {"redis": {"secretRef": {"name": "redis", "key": "url"}}, "ttlSeconds": 600, "maxEntryBytes": 65536},
    "networkPolicy": {"enabled": True, "allowedNamespaces": ["monitoring", "frontend"]},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "ml", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    "serviceAccountName": "sentiment-runtime",
}

# Valid MLModels covering every field and branch the builders have.
SAMPLES: dict[str, dict] = {
    "minimal": mlmodel(),
    "full": mlmodel(spec=FULL_SPEC, uid="0c4a7f0e-1111-2222-3333-444455556666", generation=3),
    "fixed-replicas": mlmodel(
        "house-prices",
        {"model": {"uri": "https://m.example.com/h.joblib", "sha256": DIGEST}, "replicas": 3,
         "monitoring": {"serviceMonitor": False}},
        uid="u-2",
        generation=1,
    ),
    "onnx-unverified": mlmodel(
        "onnx-dev",
        {"model": {"uri": "file:///models/m.onnx", "format": "onnx", "allowUnverified": True},
         "replicas": 1},
    ),
    "absolute-path": mlmodel(
        "baked",
        {"model": {"uri": "/models/model.joblib", "sha256": DIGEST},
         "runtime": {"image": "example.com/sentiment-with-model:1"}},
    ),
    "claim": mlmodel(
        "from-claim", {"model": {"uri": "pvc://models/sentiment/1.0/model.joblib", "sha256": DIGEST}}
    ),
    "image": mlmodel(
        "from-image",
        {"model": {"uri": "oci://registry.example.com/models/sentiment:1.0", "sha256": DIGEST},
         "runtime": {"imagePullSecrets": [{"name": "regcred"}]}},
    ),
    "autoscaling-one": mlmodel(
        "autoscale-one",
        {"model": {"uri": "http://models.svc/m.joblib", "sha256": DIGEST},
         "autoscaling": {"maxReplicas": 1}, "networkPolicy": {"enabled": True}},
    ),
    "scaled-to-zero": mlmodel(
        "idle", {"model": {"uri": "https://m.example.com/a.joblib", "sha256": DIGEST}, "replicas": 0}
    ),
    "ingress": mlmodel(
        "exposed",
        {"model": {"uri": "https://m.example.com/a.joblib", "sha256": DIGEST},
         "ingress": {"host": "models.example.com", "path": "/sentiment", "className": "nginx",
                     "tlsSecretName": "models-tls",
                     "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}}},
        uid="u-3",
    ),
    "gateway": mlmodel(
        "routed",
        {"model": {"uri": "https://m.example.com/a.joblib", "sha256": DIGEST},
         "service": {"port": 8000},
         "gateway": {"parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"},
                                    {"name": "internal"}],
                     "hostnames": ["models.example.com", "ml.example.com"], "path": "/routed/"}},
    ),
}


def with_changes(base: dict, changes: dict) -> dict:
    """A deep copy of `base` with dotted-path keys set (value None deletes the key)."""
    result = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return result


# spec.model.uri values naming a volume the operator mounts: valid ones, and near misses the CRD
# and the spec model refuse (the key says why).
VOLUME_URIS = {
    "claim": "pvc://models/sentiment/model.joblib",
    "claim-dotted-name": "pvc://models.v2/model.joblib",
    "claim-hidden-folder": "pvc://models/.versions/..1/model.joblib",
    "image-tag": "oci://registry.example.com/models/sentiment:1.0",
    "image-port-digest": f"oci://localhost:5000/sentiment@sha256:{DIGEST}",
    "image-tag-digest-path": f"oci://ghcr.io/team/sentiment_v2:1.0@sha256:{DIGEST}#onnx/model.onnx",
}
BAD_VOLUME_URIS = {
    "claim-without-path": "pvc://models",
    "claim-folder": "pvc://models/sentiment/",
    "claim-dot-dot": "pvc://models/../secrets/model.joblib",
    "claim-dot": "pvc://models/./model.joblib",
    "claim-uppercase": "pvc://Models/model.joblib",
    "claim-empty": "pvc:///model.joblib",
    "claim-double-slash": "pvc://models//model.joblib",
    "image-without-tag": "oci://registry.example.com/models/sentiment",
    "image-without-registry": "oci://sentiment:1.0",
    "image-uppercase-repository": "oci://registry.example.com/Models/sentiment:1.0",
    "image-short-digest": "oci://registry.example.com/sentiment@sha256:abc123",
    "image-path-escapes": "oci://registry.example.com/sentiment:1.0#../model.joblib",
    "image-empty-path": "oci://registry.example.com/sentiment:1.0#",
}
