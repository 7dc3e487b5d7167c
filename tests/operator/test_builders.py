"""Pure builders: every object they make is one the Kubernetes API accepts, and wired right."""

from __future__ import annotations

import copy
import os
import re

import kubernetes_validate
import pytest
from jsonschema import Draft202012Validator
from mlmodel_operator.builders import (
    InvalidSpec,
    build_children,
    build_deployment,
    build_hpa,
    build_network_policy,
    build_pdb,
    build_service,
    build_servicemonitor,
    selector_string,
)
from mlmodel_operator.builders.common import ROLLOUT_HASH_ANNOTATION
from mlmodel_operator.kube import CHILD_TYPES
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status, invalid_spec_status
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_spec.resource import parse_spec
from mlmodel_spec.runtime_settings import MANAGED_ENV, MANAGED_SETTINGS, SPEC_FIELDS
from support.crd import DIGEST, K8S_VERSION, SAMPLES, with_changes

SETTINGS = OperatorSettings()
LABEL_KEYS = {
    f"app.kubernetes.io/{key}"
    for key in ("name", "instance", "component", "part-of", "managed-by", "version")
}


# The part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) API the builder
# uses, from its API reference; unknown fields are refused, as the real CRD's schema prunes them.
_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
SERVICEMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                        },
                    },
                },
            },
        },
    },
}


def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": properties}


# The part of the Gateway API's HTTPRoute (gateway.networking.k8s.io/v1) the builder uses, from
# its API reference; the real CRD judges it in tests/controlplane/test_rendered_objects.py.
_GATEWAY_PATH = r"^/[A-Za-z0-9._~/-]*$"
HTTPROUTE_SCHEMA = _closed(
    {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object"},
        "spec": _closed(
            {
                "parentRefs": {"type": "array", "minItems": 1, "items": _closed(
                    {"group": {"const": "gateway.networking.k8s.io"}, "kind": {"const": "Gateway"},
                     "name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                     "sectionName": {"type": "string"}},
                    ("name",),
                )},
                "hostnames": {"type": "array", "items": {"type": "string"}},
                "rules": {"type": "array", "minItems": 1, "items": _closed({
                    "matches": {"type": "array", "items": _closed({"path": _closed(
                        {"type": {"const": "PathPrefix"},
                         "value": {"type": "string", "pattern": _GATEWAY_PATH}}, ("type", "value"),
                    )})},
                    "filters": {"type": "array", "items": _closed(
                        {"type": {"const": "URLRewrite"}, "urlRewrite": _closed({"path": _closed(
                            {"type": {"const": "ReplacePrefixMatch"},
                             "replacePrefixMatch": {"const": "/"}}, ("type", "replacePrefixMatch"),
                        )})},
                        ("type", "urlRewrite"),
                    )},
                    "backendRefs": {"type": "array", "minItems": 1, "items": _closed(
                        {"group": {"const": ""}, "kind": {"const": "Service"},
                         "name": {"type": "string"}, "weight": {"type": "integer"},
                         "port": {"type": "integer", "minimum": 1, "maximum": 65535}},
                        ("name", "port"),
                    )},
                })},
            },
            ("parentRefs", "rules"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
CUSTOM_SCHEMAS = {"ServiceMonitor": SERVICEMONITOR_SCHEMA, "HTTPRoute": HTTPROUTE_SCHEMA}


def validate(obj: dict) -> None:
    """The official Kubernetes schema (strict: no unknown fields), or the custom resource's."""
    if obj["kind"] in CUSTOM_SCHEMAS:
        Draft202012Validator(CUSTOM_SCHEMAS[obj["kind"]]).validate(obj)
        # Its metadata is a plain ObjectMeta: check it under a kind the official schemas know.
        carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        assert kubernetes_validate.validate(carrier, K8S_VERSION, strict=True)
    else:
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("supported", [True, False], ids=["with-servicemonitor-crd", "without"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_child_passes_the_kubernetes_schema(name, supported):
    children = build_children(SAMPLES[name], SETTINGS, servicemonitor_supported=supported)
    assert children
    for child in children:
        validate(child)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_children_are_named_labelled_and_owned(name):
    mlmodel = SAMPLES[name]
    uid = mlmodel["metadata"].get("uid")
    for child in build_children(mlmodel, SETTINGS, servicemonitor_supported=True):
        meta = child["metadata"]
        assert meta["name"] == mlmodel["metadata"]["name"]
        assert meta["namespace"] == "models"
        assert LABEL_KEYS <= set(meta["labels"])
        assert meta["labels"]["app.kubernetes.io/instance"] == mlmodel["metadata"]["name"]
        if uid:
            assert meta["ownerReferences"] == [
                {
                    "apiVersion": "serving.mlmodel.io/v1alpha1",
                    "kind": "MLModel",
                    "name": mlmodel["metadata"]["name"],
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        else:
            assert "ownerReferences" not in meta


def test_builders_are_pure():
    mlmodel = SAMPLES["full"]
    before = copy.deepcopy(mlmodel)
    first = build_children(mlmodel, SETTINGS, servicemonitor_supported=True)
    second = build_children(mlmodel, SETTINGS, servicemonitor_supported=True)
    assert first == second
    assert mlmodel == before
    first[0]["metadata"]["labels"]["x"] = "y"
    assert "x" not in build_children(mlmodel, SETTINGS, servicemonitor_supported=True)[0]["metadata"]["labels"]


def test_children_in_apply_order_and_optional_kinds():
    full = [c["kind"] for c in build_children(SAMPLES["full"], SETTINGS, servicemonitor_supported=True)]
    assert full == [
        "NetworkPolicy",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ]
    minimal = [c["kind"] for c in build_children(SAMPLES["minimal"], SETTINGS, servicemonitor_supported=True)]
    assert minimal == ["Service", "Deployment", "ServiceMonitor"]
    exposed = [c["kind"] for c in build_children(SAMPLES["ingress"], SETTINGS, servicemonitor_supported=True)]
    assert exposed == ["Service", "Deployment", "ServiceMonitor", "Ingress"]
    routed = [c["kind"] for c in build_children(SAMPLES["gateway"], SETTINGS, servicemonitor_supported=False)]
    assert routed == ["Service", "Deployment", "HTTPRoute"]
    # the kinds the operator prunes
    assert {*full, *exposed, *routed} == {rtype.kind for rtype in CHILD_TYPES}


def test_the_single_builders_match_build_children():
    mlmodel = SAMPLES["full"]
    singles = [
        build_network_policy(mlmodel, parse_spec(mlmodel)),
        build_service(mlmodel, parse_spec(mlmodel)),
        build_deployment(mlmodel, parse_spec(mlmodel), SETTINGS),
        build_hpa(mlmodel, parse_spec(mlmodel)),
        build_pdb(mlmodel, parse_spec(mlmodel)),
        build_servicemonitor(mlmodel, parse_spec(mlmodel), SETTINGS),
    ]
    assert singles == build_children(mlmodel, SETTINGS, servicemonitor_supported=True)


def _pod(mlmodel: dict, settings: OperatorSettings = SETTINGS) -> dict:
    return build_deployment(mlmodel, parse_spec(mlmodel), settings)["spec"]["template"]


def _container(mlmodel: dict, settings: OperatorSettings = SETTINGS) -> dict:
    return _pod(mlmodel, settings)["spec"]["containers"][0]


def _env(mlmodel: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in _container(mlmodel)["env"]}


def test_env_carries_the_full_spec():
    env = _env(SAMPLES["full"])
    values = {name: entry.get("value") for name, entry in env.items()}
    assert values["MLMODEL_MODEL_NAME"] == "sentiment"
    assert values["MLMODEL_MODEL_URI"] == "s3://models/sentiment/model.joblib"
    assert values["MLMODEL_MODEL_SHA256"] == DIGEST
    assert values["MLMODEL_MODEL_FORMAT"] == "sklearn"
    assert values["MLMODEL_MODEL_VERSION"] == "1.2.0"
    assert values["MLMODEL_ALLOW_UNVERIFIED_ARTIFACT"] == "false"
    assert values["MLMODEL_CACHE_DIR"] == "/var/cache/mlmodel"
    assert values["MLMODEL_PORT"] == "8080"
    assert values["MLMODEL_GRPC_PORT"] == "8081"
    assert values["MLMODEL_WORKERS"] == "2"
    assert values["MLMODEL_MAX_BATCH_SIZE"] == "32"
    assert values["MLMODEL_MAX_BATCH_WAIT_MS"] == "2.5"
    assert values["MLMODEL_S3_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert values["MLMODEL_PREDICTION_LOG_SAMPLE_RATE"] == "0.1"
    assert values["MLMODEL_AUTH_TOKEN_FILE"] == "/var/run/secrets/mlmodel/auth/tokens"
    assert values["MLMODEL_LOG_LEVEL"] == "debug"
    assert env["MLMODEL_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["MLMODEL_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MLMODEL_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "mlmodel-db", "key": "url"}}
    assert env["MLMODEL_CACHE_REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "redis", "key": "url"}}
    assert values["MLMODEL_CACHE_TTL_SECONDS"] == "600"
    assert values["MLMODEL_CACHE_MAX_ENTRY_BYTES"] == "65536"
    assert env["EXTRA"]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert _container(SAMPLES["full"])["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


def test_cache_env_only_with_spec_cache():
    cache_variables = {"MLMODEL_CACHE_REDIS_URL", "MLMODEL_CACHE_TTL_SECONDS", "MLMODEL_CACHE_MAX_ENTRY_BYTES"}
    assert not cache_variables & set(_env(SAMPLES["minimal"]))
    defaults = with_changes(SAMPLES["minimal"], {"spec.cache": {"redis": {"secretRef": {"name": "r", "key": "u"}}}})
    env = _env(defaults)
    assert env["MLMODEL_CACHE_TTL_SECONDS"]["value"] == "3600"
    assert env["MLMODEL_CACHE_MAX_ENTRY_BYTES"]["value"] == "1048576"
    assert "value" not in env["MLMODEL_CACHE_REDIS_URL"]  # never in the pod template itself


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_runtime_reads_the_env_it_is_given(name, monkeypatch):
    """The env is the operator-runtime contract: every MLMODEL_ variable is a RuntimeSettings
    field, and RuntimeSettings built from it serves the MLModel's model."""
    env = _env(SAMPLES[name])
    fields = set(RuntimeSettings.model_fields)
    for variable in env:
        if variable.startswith("MLMODEL_"):
            assert variable.removeprefix("MLMODEL_").lower() in fields, variable
    for variable in list(os.environ):
        if variable.startswith("MLMODEL_"):
            monkeypatch.delenv(variable)
    for variable, entry in env.items():
        if "value" in entry:
            monkeypatch.setenv(variable, entry["value"])
    runtime = RuntimeSettings()
    model = SAMPLES[name]["spec"]["model"]
    assert runtime.model_name == SAMPLES[name]["metadata"]["name"]
    assert runtime.model_uri == model["uri"]
    assert runtime.model_sha256 == model.get("sha256")
    assert runtime.allow_unverified_artifact == model.get("allowUnverified", False)
    assert runtime.port == 8080 and runtime.grpc_port == 8081
    assert str(runtime.cache_dir) == "/var/cache/mlmodel"


def test_every_setting_the_operator_manages_is_a_runtime_setting():
    fields = set(RuntimeSettings.model_fields)
    assert set(MANAGED_SETTINGS) <= fields
    assert set(SPEC_FIELDS) <= set(MANAGED_SETTINGS)


def test_a_user_env_cannot_override_what_the_spec_decides():
    for name in sorted(MANAGED_ENV):
        bad = with_changes(SAMPLES["minimal"], {"spec.runtime": {"env": [{"name": name, "value": "x"}]}})
        with pytest.raises(InvalidSpec, match=name):
            build_deployment(bad, parse_spec(bad), SETTINGS)


def test_restricted_security_context_and_writable_cache():
    pod = _pod(SAMPLES["full"])["spec"]
    container = pod["containers"][0]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and isinstance(context["runAsUser"], int)
    assert context["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/var/cache/mlmodel"]]["emptyDir"]["sizeLimit"] == SETTINGS.cache_volume_size_limit
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/var/run/secrets/mlmodel/auth"]]["secret"] == {
        "secretName": "tokens",
        "items": [{"key": "tokens", "path": "tokens"}],
        "defaultMode": 0o440,
    }


def test_probes_and_graceful_shutdown():
    container = _container(SAMPLES["minimal"])
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= SETTINGS.startup_timeout_seconds
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    pod = _pod(SAMPLES["minimal"])["spec"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + SETTINGS.runtime_shutdown_grace_seconds
    no_hook = _container(SAMPLES["minimal"], OperatorSettings(pre_stop_sleep_seconds=0))
    assert "lifecycle" not in no_hook


def test_resources_default_from_settings_and_user_resources_win():
    settings = OperatorSettings(default_cpu_request="100m", default_memory_request="64Mi", default_memory_limit="128Mi")
    assert _container(SAMPLES["minimal"], settings)["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"memory": "128Mi"},
    }
    # The user's resources are taken whole, as written: the API server normalises quantities
    # (Server-Side Apply compares them normalised, tests/controlplane/test_lifecycle.py).
    given = SAMPLES["full"]["spec"]["runtime"]["resources"]
    assert _container(SAMPLES["full"], settings)["resources"] == given


def test_image_from_spec_else_settings():
    assert _container(SAMPLES["full"])["image"] == "registry.example.com/runtime:1.0"
    settings = OperatorSettings(runtime_image="local/runtime:dev", image_pull_policy="Never")
    container = _container(SAMPLES["minimal"], settings)
    assert (container["image"], container["imagePullPolicy"]) == ("local/runtime:dev", "Never")


def test_replicas_omitted_when_the_hpa_owns_them():
    assert "replicas" not in build_deployment(SAMPLES["full"], parse_spec(SAMPLES["full"]), SETTINGS)["spec"]
    assert build_deployment(SAMPLES["fixed-replicas"], parse_spec(SAMPLES["fixed-replicas"]), SETTINGS)["spec"]["replicas"] == 3
    assert build_deployment(SAMPLES["minimal"], parse_spec(SAMPLES["minimal"]), SETTINGS)["spec"]["replicas"] == 1
    assert build_deployment(SAMPLES["scaled-to-zero"], parse_spec(SAMPLES["scaled-to-zero"]), SETTINGS)["spec"]["replicas"] == 0
    assert build_hpa(SAMPLES["fixed-replicas"], parse_spec(SAMPLES["fixed-replicas"])) is None
    hpa = build_hpa(SAMPLES["full"], parse_spec(SAMPLES["full"]))
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sentiment"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert "behavior" not in hpa["spec"]  # the cluster's own scale-down wait


def test_the_scale_down_wait_goes_to_the_hpa_behavior():
    quick = with_changes(SAMPLES["full"], {"spec.autoscaling.scaleDownStabilizationSeconds": 30})
    hpa = build_hpa(quick, parse_spec(quick))
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}
    never_wait = with_changes(SAMPLES["full"], {"spec.autoscaling.scaleDownStabilizationSeconds": 0})
    assert build_hpa(never_wait, parse_spec(never_wait))["spec"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 0
    }
    too_long = with_changes(SAMPLES["full"], {"spec.autoscaling.scaleDownStabilizationSeconds": 3601})
    with pytest.raises(InvalidSpec, match="scaleDownStabilizationSeconds"):
        parse_spec(too_long)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("minimal", None),  # one replica: a budget would protect nothing or block every drain
        ("scaled-to-zero", None),
        ("autoscaling-one", None),
        ("fixed-replicas", 1),
        ("full", 1),  # autoscaling up to 5
    ],
)
def test_pdb_only_when_several_replicas_can_run(name, expected):
    pdb = build_pdb(SAMPLES[name], parse_spec(SAMPLES[name]))
    if expected is None:
        assert pdb is None
    else:
        assert pdb["spec"]["maxUnavailable"] == expected
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_selectors_service_and_monitor_are_wired_to_the_pods():
    mlmodel = SAMPLES["full"]
    children = {c["kind"]: c for c in build_children(mlmodel, SETTINGS, servicemonitor_supported=True)}
    deployment = children["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert "app.kubernetes.io/version" not in selector  # the selector is immutable
    assert selector_string(mlmodel) == ",".join(f"{k}={v}" for k, v in selector.items())
    service = children["Service"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
    ]
    assert children["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    monitor = children["ServiceMonitor"]
    # A ServiceMonitor selects Services (not pods) by their labels.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "scheme": "http", "interval": "15s"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    policy = children["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    rule = policy["spec"]["ingress"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "grpc"}]
    assert rule["from"][0] == {"podSelector": {}}
    assert rule["from"][1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["frontend", "monitoring"]


def test_optional_children_off_by_default():
    assert build_network_policy(SAMPLES["minimal"], parse_spec(SAMPLES["minimal"])) is None
    assert build_servicemonitor(SAMPLES["fixed-replicas"], parse_spec(SAMPLES["fixed-replicas"]), SETTINGS) is None
    assert build_servicemonitor(SAMPLES["minimal"], parse_spec(SAMPLES["minimal"]), SETTINGS)["spec"]["endpoints"][0]["interval"] == "30s"
    kinds = [c["kind"] for c in build_children(SAMPLES["minimal"], SETTINGS, servicemonitor_supported=False)]
    assert "ServiceMonitor" not in kinds


def _hash(mlmodel: dict) -> str:
    return _pod(mlmodel)["metadata"]["annotations"][ROLLOUT_HASH_ANNOTATION]


@pytest.mark.parametrize(
    "change,rolls",
    [
        ({"spec.model.uri": "https://m.example.com/b.joblib"}, True),
        ({"spec.model.sha256": "a" * 64}, True),
        ({"spec.runtime.image": "other/runtime:2"}, True),
        ({"spec.batching": {"maxBatchSize": 8}}, True),
        ({"spec.database": {"secretRef": {"name": "db2", "key": "url"}}}, True),
        ({"spec.cache": {"redis": {"secretRef": {"name": "redis", "key": "url"}}}}, True),
        ({"spec.model.format": "sklearn"}, False),  # the default, spelled out
        ({"spec.replicas": 4}, False),
        ({"spec.service": {"port": 9000}}, False),
        ({"spec.service": {"grpcPort": 9001}}, False),
        ({"spec.monitoring": {"serviceMonitor": False}}, False),
    ],
)
def test_rollout_hash_changes_exactly_when_pods_must_change(change, rolls):
    base = SAMPLES["minimal"]
    assert (_hash(with_changes(base, change)) != _hash(base)) is rolls


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"spec.model.uri": "model.joblib"}, "relative path"),
        ({"spec.model.uri": "models/v1/model.joblib"}, "relative path"),
        ({"metadata.name": "Bad.Name"}, "DNS-1035"),
        ({"spec.autoscaling": {"maxReplicas": 3}, "spec.runtime": {"resources": {"limits": {"memory": "1Gi"}}}},
         "requests.cpu"),
        ({"spec.model.sha256": None}, "sha256 is required"),
        ({"spec.service": {"port": 8081}}, "port and spec.service.grpcPort must differ"),
    ],
)
def test_specs_the_cluster_cannot_serve_raise_invalid_spec(changes, message):
    with pytest.raises(InvalidSpec, match=message):
        build_children(with_changes(SAMPLES["minimal"], changes), SETTINGS, servicemonitor_supported=True)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"spec.model.uri": "model.joblib"}, "relative path"),
        ({"spec.runtime": {"env": [{"name": "MLMODEL_PORT", "value": "9000"}]}}, "MLMODEL_PORT"),
        ({"spec.autoscaling": {"maxReplicas": 3}, "spec.runtime": {"resources": {"limits": {"memory": "1Gi"}}}},
         "requests.cpu"),
    ],
)
def test_the_spec_model_is_the_one_gate_and_the_status_says_what_it_refuses(changes, message):
    refused = with_changes(SAMPLES["minimal"], changes)
    with pytest.raises(InvalidSpec) as raised:
        parse_spec(refused)
    reason = str(raised.value)
    assert re.search(message, reason)
    status = invalid_spec_status(refused, reason, now="2026-01-01T00:00:00Z")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("True", "InvalidSpec", reason)
    # What the reconcile path writes, whatever wakes it up: the same status.
    assert compute_status(
        refused, None, servicemonitor_supported=True, now="2026-01-01T00:00:00Z"
    ) == status
    parse_spec(SAMPLES["minimal"])


def test_version_label_is_a_valid_label_value():
    odd = with_changes(SAMPLES["minimal"], {"spec.model.version": "v1.0 (Jan/2025)+build" + "x" * 80})
    for child in build_children(odd, SETTINGS, servicemonitor_supported=True):
        validate(child)
    label = build_service(odd, parse_spec(odd))["metadata"]["labels"]["app.kubernetes.io/version"]
    assert len(label) <= 63 and label.startswith("v1.0")
    assert build_service(SAMPLES["minimal"], parse_spec(SAMPLES["minimal"]))["metadata"]["labels"]["app.kubernetes.io/version"] == DIGEST[:12]
