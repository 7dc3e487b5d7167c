"""The runtime Deployment: the MLModel's settings as env, probes, and a restricted pod."""

from __future__ import annotations

from mlmodel_spec.model_uris import (
    MODEL_MOUNT_DIR,
    MODEL_VOLUME,
    ClaimVolume,
    MountedVolume,
    parse_mounted,
)
from mlmodel_spec.resource import SHADOW_SUFFIX, MLModelSpec
from mlmodel_spec.runtime_settings import MANAGED_SETTINGS, env_var, spec_settings

from mlmodel_operator.builders.common import (
    ROLLOUT_HASH_ANNOTATION,
    labels,
    object_meta,
    rollout_hash,
    selector_labels,
)
from mlmodel_operator.settings import OperatorSettings

CONTAINER_NAME = "runtime"
RUNTIME_PORT = 8080
GRPC_PORT = 8081
CACHE_DIR = "/var/cache/mlmodel"
AUTH_DIR = "/var/run/secrets/mlmodel/auth"
AUTH_FILE = "tokens"
# RuntimeSettings fields the kubelet fills in from the pod itself.
_DOWNWARD_API = {"namespace": "metadata.namespace", "pod_name": "metadata.name"}


def _value(name: str, value: object) -> dict:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return {"name": name, "value": str(value)}


def _field_ref(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def runtime_env(
    name: str, spec: MLModelSpec, settings: OperatorSettings, *, revision: str | None = None
) -> list[dict]:
    """The RuntimeSettings variables (env prefix MLMODEL_) for this MLModel, then the user's env.

    `name` is the model's name (its paths); `revision` is said by a candidate's runtime."""
    decided = {
        "model_name": name,
        **spec_settings(spec),
        "cache_dir": CACHE_DIR,
        "port": RUNTIME_PORT,
        "grpc_port": GRPC_PORT,
        "shutdown_grace_seconds": settings.runtime_shutdown_grace_seconds,
    }
    if spec.auth:
        decided["auth_token_file"] = f"{AUTH_DIR}/{AUTH_FILE}"
    if _model_volume(spec) is not None:
        decided["model_mount_dir"] = MODEL_MOUNT_DIR
    if revision is not None:
        decided["revision"] = revision
    if spec.shadow is not None:
        # The candidate's Service in the pod's own namespace (a short name its DNS resolves).
        shadow = f"{name}{SHADOW_SUFFIX}"
        decided.update(
            shadow_url=f"http://{shadow}:{spec.service.port}",
            shadow_model_name=shadow,
            shadow_sample_rate=spec.shadow.sample_rate,
            shadow_tolerance=spec.shadow.tolerance,
        )
    # URLs that hold credentials come from the Secret the spec names, never into the pod template.
    from_secrets = {
        "database_url": spec.database,
        "cache_redis_url": spec.cache.redis if spec.cache else None,
    }
    env = []
    for field in MANAGED_SETTINGS:
        variable = env_var(field)
        if field in _DOWNWARD_API:
            env.append(_field_ref(variable, _DOWNWARD_API[field]))
        elif field in from_secrets:
            holder = from_secrets[field]
            if holder is not None:
                ref = holder.secret_ref
                env.append(
                    {
                        "name": variable,
                        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                    }
                )
        elif field in decided:
            env.append(_value(variable, decided[field]))
    # The spec model refuses user entries named like these (mlmodel_spec MANAGED_ENV).
    env.extend(spec.runtime.env)
    return env


def resources(spec: MLModelSpec, settings: OperatorSettings) -> dict:
    # A user's resources are taken whole (Kubernetes semantics: a request defaults to its limit);
    # merging defaults into them could produce a request above the user's limit. Quantities go
    # as the user wrote them: the API server normalises them (Server-Side Apply compares them so).
    if spec.runtime.resources is not None:
        return {key: dict(value) for key, value in spec.runtime.resources.items()}
    return {
        "requests": {"cpu": settings.default_cpu_request, "memory": settings.default_memory_request},
        "limits": {"memory": settings.default_memory_limit},
    }


def _probe(path: str, *, period: int, failures: int, timeout: int) -> dict:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def container(
    name: str, spec: MLModelSpec, settings: OperatorSettings, *, revision: str | None = None
) -> dict:
    mounts: list[dict[str, object]] = [
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.auth:
        mounts.append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
    if _model_volume(spec) is not None:
        mounts.append({"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT_DIR, "readOnly": True})
    startup_period = 5
    result = {
        "name": CONTAINER_NAME,
        "image": spec.runtime.image or settings.runtime_image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [
            {"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": runtime_env(name, spec, settings, revision=revision),
        "resources": resources(spec, settings),
        # Startup watches liveness, not readiness: a runtime that is up but still fetching an
        # unreachable artifact retries by itself and must not be restarted in a loop.
        "startupProbe": _probe(
            "/v2/health/live",
            period=startup_period,
            failures=max(1, settings.startup_timeout_seconds // startup_period),
            timeout=2,
        ),
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3, timeout=2),
        # Generous: a busy runtime sheds load with 503 but its liveness must stay green.
        "livenessProbe": _probe("/v2/health/live", period=10, failures=6, timeout=5),
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.runtime_user_id,
            "runAsGroup": settings.runtime_user_id,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.model.credentials_secret:
        result["envFrom"] = [{"secretRef": {"name": spec.model.credentials_secret.name}}]
    if settings.pre_stop_sleep_seconds:
        # Endpoints controllers and kube-proxy need a moment to stop routing to a terminating pod.
        result["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.pre_stop_sleep_seconds}}}
    return result


def volumes(spec: MLModelSpec, settings: OperatorSettings) -> list[dict]:
    result = [
        {"name": "cache", "emptyDir": {"sizeLimit": settings.cache_volume_size_limit}},
        {"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_volume_size_limit}},
    ]
    if spec.auth:
        ref = spec.auth.secret_ref
        result.append(
            {
                "name": "auth",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": AUTH_FILE}],
                    "defaultMode": 0o440,
                },
            }
        )
    model = _model_volume(spec)
    if isinstance(model, ClaimVolume):
        result.append(
            {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": model.claim, "readOnly": True}}
        )
    elif model is not None:
        # IfNotPresent: spec.model.sha256 pins the file whatever the tag points at now.
        result.append(
            {"name": MODEL_VOLUME, "image": {"reference": model.reference, "pullPolicy": "IfNotPresent"}}
        )
    return result


def _model_volume(spec: MLModelSpec) -> MountedVolume | None:
    """The volume a pvc:// or oci:// spec.model.uri names (mounted at MODEL_MOUNT_DIR), else None."""
    return parse_mounted(spec.model.uri, spec.model.format)


def build_deployment(
    mlmodel: dict,
    spec: MLModelSpec,
    settings: OperatorSettings,
    *,
    model_name: str | None = None,
    revision: str | None = None,
) -> dict:
    """The runtime's Deployment, named after `mlmodel`; its runtime serves `model_name`
    (default: that name) and says `revision` when given (a candidate beside the model)."""
    name = mlmodel["metadata"]["name"]
    pod_spec = {
        "containers": [container(model_name or name, spec, settings, revision=revision)],
        "volumes": volumes(spec, settings),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.runtime_user_id,
            "runAsGroup": settings.runtime_user_id,
            "fsGroup": settings.runtime_user_id,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The runtime never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        # Service links would inject e.g. MLMODEL_PORT=tcp://... for a Service named "mlmodel",
        # colliding with the runtime's own MLMODEL_ settings.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(mlmodel)},
            }
        ],
    }
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(item) for item in spec.tolerations]
    if spec.runtime.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in spec.runtime.image_pull_secrets]

    deployment_spec = {
        "selector": {"matchLabels": selector_labels(mlmodel)},
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": (
            spec.rollout.progress_deadline_seconds or settings.progress_deadline_seconds
        ),
        # Never fewer serving pods than asked for during a rollout: surge one, then retire one.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": labels(mlmodel, spec),
                "annotations": {
                    ROLLOUT_HASH_ANNOTATION: rollout_hash(spec),
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(RUNTIME_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if spec.autoscaling is None:
        # Left out when an HPA owns the count, so applying the Deployment never fights it.
        deployment_spec["replicas"] = 1 if spec.replicas is None else spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(mlmodel, spec),
        "spec": deployment_spec,
    }

