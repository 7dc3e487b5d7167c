"""Property: every MLModel the CRD accepts either builds children the Kubernetes API accepts and
a status the CRD accepts, or is refused with InvalidSpec for one of the documented reasons."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from mlmodel_operator.builders import InvalidSpec, build_children
from mlmodel_operator.conditions import CONDITION_TYPES, get_condition
from mlmodel_operator.settings import OperatorSettings
from mlmodel_operator.status import compute_status, invalid_spec_status
from mlmodel_spec.runtime_settings import MANAGED_ENV
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from support.crd import mlmodel_errors, root_schema
from test_builders import validate

SPEC_SCHEMA = root_schema()["properties"]["spec"]["properties"]
STATUS_VALIDATOR = OAS30Validator(
    root_schema()["properties"]["status"], format_checker=oas30_format_checker
)
QUANTITY_PATTERN = SPEC_SCHEMA["runtime"]["properties"]["resources"]["properties"]["requests"][
    "additionalProperties"
]["pattern"]
REMOTE_SCHEMES = ("http://", "https://", "s3://", "file://")

# Operator settings that change what the builders emit (preStop hook, defaults, image policy).
SETTINGS = [
    OperatorSettings(),
    OperatorSettings(
        pre_stop_sleep_seconds=0,
        runtime_shutdown_grace_seconds=0,
        default_cpu_request="1",
        default_memory_request="1Gi",
        default_memory_limit="2Gi",
        image_pull_policy="Always",
        runtime_image="registry.local:5000/runtime:dev",
    ),
]

# --- what the API server would let through ---------------------------------------------------

# Printable text: control characters are left out because celpy's `matches` follows Python's
# `$` (which also matches before a final newline) where the API server's RE2 does not.
_CHARS = st.characters(exclude_categories=("Cs", "Cc"))
_NO_SPACE = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=" ")
_PATH_CHARS = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=" :")
_DNS_LABEL = st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
_OBJECT_NAME = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True)
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?"
_LABEL_KEY = st.from_regex(rf"([a-z0-9]([-a-z0-9.]{{0,20}}[a-z0-9])?/)?{_LABEL_NAME}", fullmatch=True)
_LABEL_VALUE = st.from_regex(rf"({_LABEL_NAME})?", fullmatch=True)
_NON_EMPTY = st.text(_CHARS, min_size=1, max_size=30)
_SHA256 = st.from_regex(r"[a-f0-9]{64}", fullmatch=True)


def _uris() -> st.SearchStrategy[str]:
    tail = st.text(_NO_SPACE, min_size=1, max_size=60)
    bucket = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=" /"), min_size=1, max_size=20)
    path = st.text(_PATH_CHARS, min_size=1, max_size=60)
    return st.one_of(
        st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["https://", "http://", "file://"]), tail),
        st.builds(lambda b, k: f"s3://{b}/{k}", bucket, tail),
        path.map(lambda p: "/" + p),  # absolute path inside the runtime image
        # Relative: only `mlmodel serve` can read it, so the operator must refuse it.
        st.builds(lambda first, rest: first + rest, st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=" :/"), path),
    )


def _often(draw) -> bool:
    """True two times in three: most examples then carry most fields, so rarer branches show up."""
    return draw(st.integers(0, 2)) > 0


@st.composite
def model_sources(draw) -> dict:
    model: dict = {"uri": draw(_uris())}
    verified = draw(st.booleans())
    if verified:
        model["sha256"] = draw(_SHA256)
        if draw(st.booleans()):
            model["allowUnverified"] = draw(st.booleans())
    else:
        model["allowUnverified"] = True
    if draw(st.booleans()):
        model["format"] = draw(st.sampled_from(["sklearn", "onnx"]))
    if draw(st.booleans()):
        model["version"] = draw(st.text(_CHARS, max_size=128))
    if draw(st.booleans()):
        model["credentialsSecret"] = {"name": draw(_OBJECT_NAME)}
    if draw(st.booleans()):
        scheme = draw(st.sampled_from(["http://", "https://"]))
        model["s3EndpointUrl"] = scheme + draw(st.text(_NO_SPACE, min_size=1, max_size=40))
    return model


_QUANTITY = st.one_of(st.integers(0, 10**6), st.from_regex(QUANTITY_PATTERN, fullmatch=True))
_RESOURCE_LIST = st.dictionaries(
    st.sampled_from(["cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"]), _QUANTITY, max_size=3
)


@st.composite
def env_entries(draw) -> dict:
    # One name in six is one the operator sets itself, which the builders must refuse.
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from(sorted(MANAGED_ENV)))
    else:
        name = draw(st.from_regex(r"[A-Za-z_][-.A-Za-z0-9_]{0,20}", fullmatch=True))
    entry: dict = {"name": name}
    source = draw(st.sampled_from(["value", "secret", "configmap", "none"]))
    if source == "value":
        entry["value"] = draw(st.text(_CHARS, max_size=40))
    elif source != "none":
        ref: dict = {"name": draw(_OBJECT_NAME), "key": draw(_NON_EMPTY)}
        if draw(st.booleans()):
            ref["optional"] = draw(st.booleans())
        entry["valueFrom"] = {"secretKeyRef" if source == "secret" else "configMapKeyRef": ref}
    return entry


@st.composite
def runtimes(draw) -> dict:
    runtime: dict = {}
    if draw(st.booleans()):
        runtime["image"] = draw(st.text(_NO_SPACE, min_size=1, max_size=60))
    if draw(st.booleans()):
        runtime["imagePullSecrets"] = draw(
            st.lists(st.builds(lambda n: {"name": n}, _OBJECT_NAME), max_size=2)
        )
    if _often(draw):
        runtime["resources"] = draw(
            st.fixed_dictionaries({}, optional={"requests": _RESOURCE_LIST, "limits": _RESOURCE_LIST})
        )
    if _often(draw):
        runtime["env"] = draw(st.lists(env_entries(), max_size=4))
    if draw(st.booleans()):
        runtime["workers"] = draw(st.integers(1, 64))
    return runtime


@st.composite
def autoscalings(draw) -> dict:
    maximum = draw(st.integers(1, 1000))
    scaling: dict = {"maxReplicas": maximum}
    if draw(st.booleans()):
        scaling["minReplicas"] = draw(st.integers(1, maximum))
    if draw(st.booleans()):
        scaling["targetCPUUtilizationPercentage"] = draw(st.integers(1, 100))
    return scaling


_TOLERATION = st.fixed_dictionaries(
    {},
    optional={
        "key": _LABEL_KEY,
        "operator": st.sampled_from(["Exists", "Equal"]),
        "value": _LABEL_VALUE,
        "effect": st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
        "tolerationSeconds": st.integers(-(2**63), 2**63 - 1),
    },
)
# Every interval the CRD accepts: units in the Prometheus Operator's order (h, m, s, ms), each at
# most once. The CRD refuses "1s1m" and "5s5s" (tests/operator/test_crd.py), as a ServiceMonitor would.
_INTERVALS = st.lists(st.sampled_from(["h", "m", "s", "ms"]), min_size=1, max_size=4, unique=True).flatmap(
    lambda units: st.tuples(*(st.integers(0, 999).map(lambda n, u=unit: f"{n}{u}") for unit in
                              sorted(units, key=["h", "m", "s", "ms"].index)))
).map("".join)
_SECRET_KEY_REF = st.builds(lambda name, key: {"secretRef": {"name": name, "key": key}}, _OBJECT_NAME, _NON_EMPTY)
_MS = st.one_of(st.integers(0, 1000), st.floats(0, 1000, allow_nan=False))


@st.composite
def specs(draw) -> dict:
    spec: dict = {"model": draw(model_sources())}
    if _often(draw):
        spec["runtime"] = draw(runtimes())
    scale = draw(st.sampled_from(["default", "replicas", "autoscaling"]))
    if scale == "replicas":
        spec["replicas"] = draw(st.integers(0, 1000))
    elif scale == "autoscaling":
        spec["autoscaling"] = draw(autoscalings())
    optional = {
        "batching": st.fixed_dictionaries(
            {}, optional={"maxBatchSize": st.integers(1, 4096), "maxWaitMs": _MS}
        ),
        "service": st.fixed_dictionaries({}, optional={"port": st.integers(1, 65535)}),
        "monitoring": st.fixed_dictionaries(
            {},
            optional={
                "serviceMonitor": st.booleans(),
                "interval": _INTERVALS,
                "labels": st.dictionaries(_LABEL_KEY, _LABEL_VALUE, max_size=3),
            },
        ),
        "database": _SECRET_KEY_REF,
        "predictionLogging": st.fixed_dictionaries(
            {}, optional={"sampleRate": st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))}
        ),
        "auth": _SECRET_KEY_REF,
        "networkPolicy": st.fixed_dictionaries(
            {"enabled": st.booleans()},
            optional={"allowedNamespaces": st.lists(_DNS_LABEL, max_size=4)},
        ),
        "nodeSelector": st.dictionaries(_LABEL_KEY, _LABEL_VALUE, max_size=3),
        "tolerations": st.lists(_TOLERATION, max_size=3),
        "serviceAccountName": st.one_of(st.just(""), _OBJECT_NAME),
    }
    for field, strategy in optional.items():
        if _often(draw):
            spec[field] = draw(strategy)
    return spec


@st.composite
def mlmodels(draw) -> dict:
    metadata: dict = {"name": draw(_DNS_LABEL)}
    if draw(st.booleans()):
        metadata["namespace"] = draw(_DNS_LABEL)
    if draw(st.booleans()):
        metadata["uid"] = str(draw(st.uuids()))
    if draw(st.booleans()):
        metadata["generation"] = draw(st.integers(1, 2**40))
    return {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": metadata,
        "spec": draw(specs()),
    }


# --- the Deployment's observed state, for compute_status -------------------------------------

_COUNT = st.integers(0, 12)
_PROGRESSING = st.fixed_dictionaries(
    {
        "type": st.just("Progressing"),
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.sampled_from(
            ["NewReplicaSetAvailable", "ReplicaSetUpdated", "NewReplicaSetCreated",
             "FoundNewReplicaSet", "ProgressDeadlineExceeded"]
        ),
        "message": st.text(_CHARS, max_size=40),
    }
)
_REPLICA_FAILURE = st.fixed_dictionaries(
    {
        "type": st.just("ReplicaFailure"),
        "status": st.sampled_from(["True", "False"]),
        "reason": st.just("FailedCreate"),
        "message": st.text(_CHARS, max_size=40),
    }
)


@st.composite
def observed_deployments(draw, built: dict) -> dict:
    generation = draw(st.integers(1, 5))
    status = {
        "observedGeneration": draw(st.integers(0, 5)),
        "replicas": draw(_COUNT),
        "updatedReplicas": draw(_COUNT),
        "readyReplicas": draw(_COUNT),
        "availableReplicas": draw(_COUNT),
        "conditions": [draw(kind) for kind in (_PROGRESSING, _REPLICA_FAILURE) if draw(st.booleans())],
    }
    spec = dict(built["spec"])
    if draw(st.booleans()):
        # An HPA (or kubectl scale) set the count; the built object leaves it out.
        spec["replicas"] = draw(_COUNT)
    return {**built, "metadata": {**built["metadata"], "generation": generation},
            "spec": spec, "status": status}


_TIMES = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1))
_ARTIFACT_PROBLEMS = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["ArtifactUnavailable", "DigestMismatch"]), st.text(_CHARS, min_size=1, max_size=60)),
)


def _rfc3339(moment: datetime) -> str:
    return moment.replace(microsecond=0, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the expected outcome, decided from the spec alone ---------------------------------------


def expected_refusals(mlmodel: dict) -> dict[str, str]:
    """The documented reasons the builders refuse this spec, each with a pattern its message matches."""
    spec = mlmodel["spec"]
    reasons = {}
    if not spec["model"]["uri"].startswith((*REMOTE_SCHEMES, "/")):
        reasons["relative-uri"] = r"spec\.model\.uri .* relative path"
    for index, entry in enumerate(spec.get("runtime", {}).get("env", [])):
        if entry["name"] in MANAGED_ENV:
            reasons[f"managed-env-{index}"] = rf"spec\.runtime\.env\[{index}\]\.name {entry['name']}"
    resources = spec.get("runtime", {}).get("resources")
    if "autoscaling" in spec and resources is not None and not any(
        "cpu" in resources.get(part, {}) for part in ("requests", "limits")
    ):
        reasons["autoscaling-without-cpu"] = r"requests\.cpu"
    return reasons


def _label_problems(obj: dict) -> list[str]:
    """Label syntax the API server checks but the OpenAPI schemas do not (metadata and selectors)."""
    name = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
    key_pattern = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{name}$")
    value_pattern = re.compile(rf"^({name})?$")
    problems = []

    def check(labels: dict, where: str) -> None:
        for key, value in labels.items():
            if not key_pattern.match(key):
                problems.append(f"{where}: bad label key {key!r}")
            if not isinstance(value, str) or not value_pattern.match(value):
                problems.append(f"{where}: bad label value {value!r} for {key}")

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ("labels", "matchLabels", "nodeSelector") and isinstance(item, dict):
                    check(item, f"{where}.{key}")
                elif key == "matchExpressions":
                    for expression in item:
                        for value in expression.get("values", []):
                            check({expression["key"]: value}, f"{where}.{key}")
                walk(item, f"{where}.{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")

    walk(obj, obj["kind"])
    return problems


def assert_status_accepted(mlmodel: dict, status: dict) -> None:
    errors = [error.message for error in STATUS_VALIDATOR.iter_errors(status)]
    assert errors == [], errors
    # Unknown fields (which the API server would prune) and the CRD's CEL rules, on the whole object.
    assert mlmodel_errors({**mlmodel, "status": status}) == []
    assert sorted(c["type"] for c in status["conditions"]) == sorted(CONDITION_TYPES)


# --- the property ----------------------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree; a failure prints its reproduction
    print_blob=True,
    # No "explain" phase: re-running failures under coverage doubles an already slow shrink.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    mlmodel=mlmodels(),
    operator_settings=st.sampled_from(SETTINGS),
    servicemonitor_supported=st.booleans(),
    now=_TIMES,
    artifact_problem=_ARTIFACT_PROBLEMS,
    data=st.data(),
)
def test_every_accepted_mlmodel_builds_valid_objects_and_status(
    mlmodel, operator_settings, servicemonitor_supported, now, artifact_problem, data
):
    assert mlmodel_errors(mlmodel) == [], "the strategy must only generate MLModels the CRD accepts"
    refusals = expected_refusals(mlmodel)
    earlier, later = _rfc3339(now), _rfc3339(now + timedelta(minutes=5))

    try:
        children = build_children(mlmodel, operator_settings, servicemonitor_supported=servicemonitor_supported)
    except InvalidSpec as error:
        message = str(error)
        event("refused", "+".join(sorted(key.rstrip("-0123456789") for key in refusals)))
        assert refusals, f"refused a spec the operator should serve: {message}"
        assert message.strip()
        assert any(re.search(pattern, message) for pattern in refusals.values()), (message, refusals)
        # What the operator writes for it: Degraded/InvalidSpec with the same message.
        status = invalid_spec_status(mlmodel, message, now=earlier)
        assert_status_accepted(mlmodel, status)
        assert get_condition(status["conditions"], "Degraded")["reason"] == "InvalidSpec"
        assert get_condition(status["conditions"], "Ready")["status"] == "False"
        if "relative-uri" in refusals:  # found by parsing the spec alone, so the status sees it too
            assert compute_status(
                mlmodel, None, servicemonitor_supported=servicemonitor_supported, now=earlier
            ) == status
        return

    assert not refusals, f"built children for a spec that must be refused: {refusals}"
    kinds = [child["kind"] for child in children]
    event("built", ",".join(kinds))
    assert len(kinds) == len(set(kinds)) and "Deployment" in kinds and "Service" in kinds
    for child in children:
        validate(child)  # official Kubernetes schemas, strict (ServiceMonitor: its own schema)
        assert _label_problems(child) == []

    deployment = next(child for child in children if child["kind"] == "Deployment")
    observed = data.draw(st.one_of(st.none(), observed_deployments(deployment)), label="deployment")
    status = compute_status(
        mlmodel, observed, servicemonitor_supported=servicemonitor_supported, now=earlier,
        artifact_problem=artifact_problem,
    )
    assert_status_accepted(mlmodel, status)
    # Stored and recomputed later with nothing changed: the same status, so no write.
    again = compute_status(
        {**mlmodel, "status": status}, observed, servicemonitor_supported=servicemonitor_supported,
        now=later, artifact_problem=artifact_problem,
    )
    assert again == status


@pytest.mark.parametrize("quantity", ["1E80", "0E3000000", "569.1442807340Ei", "-.5e-20"])
def test_extreme_quantities_the_crd_accepts_do_not_crash_the_builders(quantity):
    """Found by the property above: the CRD's quantity pattern admits any exponent."""
    spec = {"model": {"uri": "https://m.example.com/a.joblib", "allowUnverified": True},
            "runtime": {"resources": {"requests": {"cpu": quantity}}}}
    mlmodel = {"apiVersion": "serving.mlmodel.io/v1alpha1", "kind": "MLModel",
               "metadata": {"name": "huge"}, "spec": spec}
    assert mlmodel_errors(mlmodel) == []
    try:
        children = build_children(mlmodel, SETTINGS[0], servicemonitor_supported=False)
    except InvalidSpec as error:  # refusing it with a message is fine; crashing is not
        assert "resources" in str(error)
        return
    for child in children:
        validate(child)
