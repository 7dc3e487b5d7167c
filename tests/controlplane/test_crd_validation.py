"""The real API server refuses invalid MLModels with the CRD's messages at `kubectl apply`.

Every CEL rule and every pattern in crds/mlmodel.yaml has a case that must be refused and a near
miss that must be accepted, checked with a server-side dry run (nothing is stored).
"""

from __future__ import annotations

from typing import Any

import pytest
from support.cluster import Cluster, KubectlError
from support.crd import with_changes

from controlplane.models import SHA256, mlmodel

pytestmark = pytest.mark.cluster
NAMESPACE = "default"


BASE = mlmodel("sentiment", NAMESPACE)
CANDIDATE = {"uri": "https://models.example.com/sentiment/v2/model.joblib", "sha256": SHA256}
NAME_RULE = "must be a DNS-1035 label"
URI_RULE = "other schemes are not supported"
PATTERN = "should match"

# case: (changes, what the server's answer must say)
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    # root rule: metadata.name names the Service, so it must be a DNS-1035 label
    "name-with-dot": ({"metadata.name": "sentiment.v2"}, NAME_RULE),
    "name-starts-with-digit": ({"metadata.name": "1sentiment"}, NAME_RULE),
    "name-too-long": ({"metadata.name": "m" * 64}, NAME_RULE),
    # spec rule
    "replicas-and-autoscaling": (
        {"spec.replicas": 2, "spec.autoscaling": {"maxReplicas": 3}},
        "set spec.replicas or spec.autoscaling, not both",
    ),
    # spec.model rule
    "sha256-missing": ({"spec.model.sha256": None}, "spec.model.sha256 is required"),
    "unverified-false": (
        {"spec.model.sha256": None, "spec.model.allowUnverified": False},
        "spec.model.sha256 is required",
    ),
    # spec.model.uri rule
    "scheme-ftp": ({"spec.model.uri": "ftp://host/m.joblib"}, URI_RULE),
    "s3-without-key": ({"spec.model.uri": "s3://bucket"}, URI_RULE),
    "uri-with-space": ({"spec.model.uri": "https://host/a b.joblib"}, URI_RULE),
    # spec.autoscaling rule
    "min-over-max": (
        {"spec.replicas": None, "spec.autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must not exceed maxReplicas",
    ),
    # spec.service rule: the HTTP and gRPC ports differ
    "grpc-port-equals-http-port": (
        {"spec.service": {"port": 9000, "grpcPort": 9000}}, "must differ"
    ),
    "grpc-port-equals-default-http-port": ({"spec.service": {"grpcPort": 80}}, "must differ"),
    # patterns
    "sha256-too-short": ({"spec.model.sha256": "abc123"}, PATTERN),
    "sha256-uppercase": ({"spec.model.sha256": SHA256.upper()}, PATTERN),
    "s3-endpoint-without-scheme": ({"spec.model.s3EndpointUrl": "minio:9000"}, PATTERN),
    "interval-words": ({"spec.monitoring": {"interval": "30 seconds"}}, PATTERN),
    "interval-units-out-of-order": ({"spec.monitoring": {"interval": "1s1m"}}, PATTERN),
    "interval-unit-twice": ({"spec.monitoring": {"interval": "5s5s"}}, PATTERN),
    # bounds and enums, as the schema states them
    "negative-replicas": ({"spec.replicas": -1}, "should be greater than or equal to 0"),
    "port-zero": ({"spec.service": {"port": 0}}, "should be greater than or equal to 1"),
    "unknown-format": ({"spec.model.format": "pytorch"}, "Unsupported value"),
    "sample-rate-over-1": (
        {"spec.predictionLogging": {"sampleRate": 2}}, "should be less than or equal to 1"
    ),
    "no-model": ({"spec.model": None}, "Required value"),
    # spec rule: one external route
    "ingress-and-gateway": (
        {"spec.ingress": {"host": "m.example.com"}, "spec.gateway": {"parentRefs": [{"name": "g"}]}},
        "set spec.ingress or spec.gateway, not both",
    ),
    "ingress-uppercase-host": ({"spec.ingress": {"host": "Models.example.com"}}, PATTERN),
    "ingress-wildcard-host": ({"spec.ingress": {"host": "*.example.com"}}, PATTERN),
    "ingress-label-too-long": ({"spec.ingress": {"host": "m" * 64 + ".example.com"}}, PATTERN),
    "ingress-dot-dot-path": ({"spec.ingress": {"host": "m.example.com", "path": "/a/../b"}}, PATTERN),
    "gateway-hostname-with-port": (
        {"spec.gateway": {"parentRefs": [{"name": "g"}], "hostnames": ["m.example.com:443"]}}, PATTERN
    ),
    "gateway-relative-path": ({"spec.gateway": {"parentRefs": [{"name": "g"}], "path": "m"}}, PATTERN),
    "gateway-without-parents": ({"spec.gateway": {"parentRefs": []}}, "should have at least 1 items"),
    # candidates: their names, one at a time, and their models checked as spec.model is
    "shadow-name-too-long": (
        {"metadata.name": "m" * 57, "spec.shadow": {"model": CANDIDATE}}, "at most 56 characters with spec.shadow"
    ),
    "canary-name-too-long": (
        {"metadata.name": "m" * 57, "spec.canary": {"model": CANDIDATE, "weight": 10}},
        "at most 56 characters with spec.canary",
    ),
    "shadow-and-canary": (
        {"spec.shadow": {"model": CANDIDATE}, "spec.canary": {"model": CANDIDATE, "weight": 10}},
        "set spec.shadow or spec.canary, not both",
    ),
    "shadow-sha256-missing": (
        {"spec.shadow": {"model": {"uri": CANDIDATE["uri"]}}}, "spec.shadow.model.sha256 is required"
    ),
    "canary-sha256-missing": (
        {"spec.canary": {"model": {"uri": CANDIDATE["uri"]}, "weight": 10}},
        "spec.canary.model.sha256 is required",
    ),
    "shadow-scheme-ftp": ({"spec.shadow": {"model": {**CANDIDATE, "uri": "ftp://h/m.joblib"}}}, URI_RULE),
    "canary-scheme-ftp": (
        {"spec.canary": {"model": {**CANDIDATE, "uri": "ftp://h/m.joblib"}, "weight": 10}}, URI_RULE
    ),
    "shadow-sha256-too-short": ({"spec.shadow": {"model": {**CANDIDATE, "sha256": "abc"}}}, PATTERN),
    "canary-sha256-too-short": (
        {"spec.canary": {"model": {**CANDIDATE, "sha256": "abc"}, "weight": 10}}, PATTERN
    ),
    "shadow-s3-endpoint-without-scheme": (
        {"spec.shadow": {"model": {**CANDIDATE, "s3EndpointUrl": "minio:9000"}}}, PATTERN
    ),
    "canary-s3-endpoint-without-scheme": (
        {"spec.canary": {"model": {**CANDIDATE, "s3EndpointUrl": "minio:9000"}, "weight": 10}}, PATTERN
    ),
    "canary-weight-100": (
        {"spec.canary": {"model": CANDIDATE, "weight": 100}}, "should be less than or equal to 99"
    ),
}

# The near miss of each rule: as close to a refused case as possible, and valid.
ACCEPTED: dict[str, dict[str, Any]] = {
    "name-63-chars": {"metadata.name": "m" * 63},
    "name-with-dashes": {"metadata.name": "sentiment-v2"},
    "autoscaling-without-replicas": {"spec.replicas": None, "spec.autoscaling": {"maxReplicas": 3}},
    "unverified-opt-out": {"spec.model.sha256": None, "spec.model.allowUnverified": True},
    "scheme-http": {"spec.model.uri": "http://host/m.joblib"},
    "scheme-file": {"spec.model.uri": "file:///models/m.joblib"},
    "s3-with-key": {"spec.model.uri": "s3://bucket/m.joblib"},
    "relative-path": {"spec.model.uri": "model.joblib"},
    "min-equals-max": {"spec.replicas": None, "spec.autoscaling": {"minReplicas": 2, "maxReplicas": 2}},
    "s3-endpoint": {"spec.model.s3EndpointUrl": "http://minio.minio.svc:9000"},
    "interval-composite": {"spec.monitoring": {"interval": "1m30s"}},
    "interval-zero": {"spec.monitoring": {"interval": "0"}},
    "interval-ms": {"spec.monitoring": {"interval": "500ms"}},
    "zero-replicas": {"spec.replicas": 0},
    "sample-rate-1": {"spec.predictionLogging": {"sampleRate": 1}},
    "format-onnx": {"spec.model.format": "onnx"},
    "grpc-port-differs": {"spec.service": {"port": 9000, "grpcPort": 9001}},
    "ingress-alone": {"spec.ingress": {"host": "m" * 63 + ".example.com", "path": "/ml/sentiment/",
                                       "className": "nginx", "tlsSecretName": "tls"}},
    "gateway-alone": {"spec.gateway": {"parentRefs": [{"name": "g", "namespace": "gw"}],
                                       "hostnames": ["a.example.com"], "path": "/v-1.2/x_y~z"}},
    "shadow-name-56-chars": {"metadata.name": "m" * 56, "spec.shadow": {"model": CANDIDATE}},
    "canary-name-56-chars": {"metadata.name": "m" * 56, "spec.canary": {"model": CANDIDATE, "weight": 99}},
    "shadow-unverified-opt-out": {"spec.shadow": {"model": {"uri": CANDIDATE["uri"], "allowUnverified": True}}},
    "canary-s3": {"spec.canary": {"model": {**CANDIDATE, "uri": "s3://b/m.joblib",
                                            "s3EndpointUrl": "http://minio:9000"}, "weight": 1}},
}


def dry_run(cluster: Cluster, body: dict[str, Any]) -> str:
    import yaml

    return cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(body)
    ).stdout


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_with_the_crd_message(installed_cluster: Cluster, case: str):
    changes, expected = REFUSED[case]
    with pytest.raises(KubectlError) as refused:
        dry_run(installed_cluster, with_changes(BASE, changes))
    assert "is invalid" in refused.value.stderr, refused.value.stderr
    assert expected in " ".join(refused.value.stderr.split()), refused.value.stderr


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_near_miss_accepted(installed_cluster: Cluster, case: str):
    assert "(server dry run)" in dry_run(installed_cluster, with_changes(BASE, ACCEPTED[case]))


def test_every_rule_and_pattern_of_the_crd_has_a_case():
    """The cases above cover what the CRD declares: a new rule needs a new case here."""
    import yaml
    from support.cluster import REPO_ROOT

    crd = yaml.safe_load((REPO_ROOT / "crds" / "mlmodel.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            found.append(f"{path or '.'}: {rule['rule']}")
        if "pattern" in node:
            found.append(f"{path}: pattern")
        for key, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    covered_paths = {
        ".": ("name-with-dot", "shadow-name-too-long", "canary-name-too-long"),
        ".spec": ("replicas-and-autoscaling", "ingress-and-gateway", "shadow-and-canary"),
        ".spec.ingress.host": "ingress-uppercase-host",
        ".spec.ingress.path": "ingress-dot-dot-path",
        ".spec.gateway.hostnames[]": "gateway-hostname-with-port",
        ".spec.gateway.path": "gateway-relative-path",
        ".spec.model": "sha256-missing",
        ".spec.model.uri": "scheme-ftp",
        ".spec.autoscaling": "min-over-max",
        ".spec.model.sha256": "sha256-too-short",
        ".spec.model.s3EndpointUrl": "s3-endpoint-without-scheme",
        ".spec.monitoring.interval": "interval-words",
        ".spec.service": "grpc-port-equals-http-port",
        ".spec.shadow.model": "shadow-sha256-missing",
        ".spec.shadow.model.uri": "shadow-scheme-ftp",
        ".spec.shadow.model.sha256": "shadow-sha256-too-short",
        ".spec.shadow.model.s3EndpointUrl": "shadow-s3-endpoint-without-scheme",
        ".spec.canary.model": "canary-sha256-missing",
        ".spec.canary.model.uri": "canary-scheme-ftp",
        ".spec.canary.model.sha256": "canary-sha256-too-short",
        ".spec.canary.model.s3EndpointUrl": "canary-s3-endpoint-without-scheme",
    }
    cases = {path: (c,) if isinstance(c, str) else c for path, c in covered_paths.items()}
    for entry in found:
        path = entry.split(":", 1)[0]
        assert path in cases, f"no refused case for {entry}"
        assert set(cases[path]) <= set(REFUSED)
    assert len(found) == sum(len(c) for c in cases.values()), found
