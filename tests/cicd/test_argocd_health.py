"""The Argo CD health check of MLModel, run by Lua 5.1 (Argo CD's gopher-lua speaks 5.1) against
sample MLModel statuses."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
from cicd_support import GITOPS_DIR
from lua_literal import lua_literal

HEALTH_SCRIPT = GITOPS_DIR / "argocd" / "mlmodel-health.lua"
HARNESS = Path(__file__).parent / "lua" / "run_health.lua"
NOW = "2025-01-01T00:00:00Z"


def condition(type_: str, status: str, reason: str, message: str, generation: int | None = 2):
    result = {"type": type_, "status": status, "reason": reason, "message": message,
              "lastTransitionTime": NOW}
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def model(generation: int | None = 2, status: dict | None = None, **spec) -> dict:
    metadata = {"name": "sentiment", "namespace": "models"}
    if generation is not None:
        metadata["generation"] = generation
    result = {
        "apiVersion": "serving.mlmodel.io/v1alpha1",
        "kind": "MLModel",
        "metadata": metadata,
        "spec": {"model": {"uri": "https://m.example.com/a.joblib", "sha256": "0" * 64}, **spec},
    }
    if status is not None:
        result["status"] = status
    return result


READY = condition("Ready", "True", "Available", "2/2 replicas ready")
NOT_PROGRESSING = condition("Progressing", "False", "RolloutComplete", "Rollout complete")
NOT_DEGRADED = condition("Degraded", "False", "AsExpected", "No problem found")
HEALTHY_STATUS = {"observedGeneration": 2, "conditions": [READY, NOT_PROGRESSING, NOT_DEGRADED]}


def run_health(lua: str, tmp_path: Path, obj: dict) -> tuple[str, str]:
    sample = tmp_path / "object.lua"
    sample.write_text("return " + lua_literal(obj) + "\n")
    result = subprocess.run([lua, str(HARNESS), str(HEALTH_SCRIPT), str(sample)],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.rstrip("\n").split("\n", 1)
    return status, message


def with_conditions(*conditions, observed: int | None = 2) -> dict:
    status: dict = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return status


CASES = {
    "healthy": (
        model(status=HEALTHY_STATUS),
        "Healthy", "Available: 2/2 replicas ready",
    ),
    "no status yet": (
        model(),
        "Progressing", "Waiting for the operator to report status",
    ),
    "empty conditions": (
        model(status={"observedGeneration": 2, "conditions": []}),
        "Progressing", "Waiting for the operator to report status",
    ),
    "new generation not yet observed": (
        model(generation=3, status=HEALTHY_STATUS),
        "Progressing", "Waiting for the operator to observe generation 3 (status is for 2)",
    ),
    "status without observedGeneration": (
        model(status=with_conditions(READY, observed=None)),
        "Progressing", "Waiting for the operator to observe generation 2 (status is for none)",
    ),
    "rolling out while the old version serves": (
        model(status=with_conditions(
            READY, condition("Progressing", "True", "RollingOut", "1/2 replicas updated"),
            NOT_DEGRADED)),
        "Progressing", "RollingOut: 1/2 replicas updated",
    ),
    "degraded with message": (
        model(status=with_conditions(
            condition("Ready", "False", "ArtifactUnavailable", "artifact unavailable"),
            NOT_PROGRESSING,
            condition("Degraded", "True", "ArtifactUnavailable",
                      "sha256 mismatch: expected 0000, got 1111"))),
        "Degraded", "ArtifactUnavailable: sha256 mismatch: expected 0000, got 1111",
    ),
    "degraded wins over a rollout in progress": (
        model(status=with_conditions(
            READY, condition("Progressing", "True", "RollingOut", "1/2 replicas updated"),
            condition("Degraded", "True", "ProgressDeadlineExceeded", "rollout stuck for 10m"))),
        "Degraded", "ProgressDeadlineExceeded: rollout stuck for 10m",
    ),
    "a Degraded condition from an older generation is ignored": (
        model(generation=3, status=with_conditions(
            condition("Ready", "True", "Available", "2/2 replicas ready", generation=3),
            condition("Progressing", "False", "RolloutComplete", "done", generation=3),
            condition("Degraded", "True", "InvalidSpec", "bad uri", generation=2),
            observed=3)),
        "Healthy", "Available: 2/2 replicas ready",
    ),
    "not ready and no longer progressing": (
        model(status=with_conditions(
            condition("Ready", "False", "ReplicaFailure", "0/2 replicas ready: quota exceeded"),
            NOT_PROGRESSING, NOT_DEGRADED)),
        "Degraded", "ReplicaFailure: 0/2 replicas ready: quota exceeded",
    ),
    "ready unknown": (
        model(status=with_conditions(condition("Ready", "Unknown", "Pending", "pods pending"))),
        "Progressing", "Pending: pods pending",
    ),
    "scaled to zero": (
        model(status=with_conditions(
            condition("Ready", "False", "ScaledToZero", "0 replicas requested"),
            NOT_PROGRESSING, NOT_DEGRADED), replicas=0),
        "Suspended", "Scaled to zero replicas",
    ),
    "a failed generation rolled back: serving, but not what Git says": (
        model(status=with_conditions(
            condition("Ready", "True", "RolledBack", "2/2 replicas ready; rolled back"),
            NOT_PROGRESSING, NOT_DEGRADED,
            condition("RolledBack", "True", "CrashLoopBackOff",
                      "generation 2 failed; generation 1 serves until the spec changes"))),
        "Degraded",
        ("RolledBack: CrashLoopBackOff: generation 2 failed; generation 1 serves until the "
         "spec changes"),
    ),
    "a rollback that a new generation ended": (
        model(generation=3, status=with_conditions(
            condition("Ready", "True", "Available", "2/2 replicas ready", generation=3),
            condition("Progressing", "False", "RolloutComplete", "done", generation=3),
            condition("Degraded", "False", "AsExpected", "no problem found", generation=3),
            condition("RolledBack", "False", "SpecServed", "generation 3 is served", generation=3),
            observed=3)),
        "Healthy", "Available: 2/2 replicas ready",
    ),
    "a canary that failed its analysis": (
        model(status=with_conditions(
            READY, NOT_PROGRESSING, NOT_DEGRADED,
            condition("Canary", "False", "CanaryFailed", "p99 80.0 ms against 5.0 ms stable"))),
        "Degraded", "CanaryFailed: p99 80.0 ms against 5.0 ms stable",
    ),
    "a canary under analysis": (
        model(status=with_conditions(
            READY, NOT_PROGRESSING, NOT_DEGRADED,
            condition("Canary", "Unknown", "Analysing", "30/120 s of the window watched"))),
        "Progressing", "Analysing: 30/120 s of the window watched",
    ),
    "a canary ready to promote": (
        model(status=with_conditions(
            READY, NOT_PROGRESSING, NOT_DEGRADED,
            condition("Canary", "True", "ReadyToPromote", "ready to promote"))),
        "Healthy", "Available: 2/2 replicas ready",
    ),
    "object without generation (older API servers, tests)": (
        model(generation=None, status=with_conditions(READY, NOT_PROGRESSING, NOT_DEGRADED)),
        "Healthy", "Available: 2/2 replicas ready",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_health(lua, tmp_path, name):
    obj, expected_status, expected_message = CASES[name]
    assert run_health(lua, tmp_path, obj) == (expected_status, expected_message)


def test_health_check_does_not_modify_inputs_or_depend_on_order(lua, tmp_path):
    # Conditions are a list-map keyed by type: their order carries no meaning.
    obj = copy.deepcopy(CASES["degraded with message"][0])
    obj["status"]["conditions"].reverse()
    assert run_health(lua, tmp_path, obj)[0] == "Degraded"


def test_lua_literal_round_trip(lua, tmp_path):
    # The converter itself: what Lua reads back is what the sample said.
    script = tmp_path / "check.lua"
    sample = {"a": [1, 2.5, "x\"y\n"], "b": {"c": True, "d": None}, "e": False}
    script.write_text(
        f"local t = {lua_literal(sample)}\n"
        "assert(t.a[1] == 1 and t.a[2] == 2.5 and t.a[3] == 'x\"y\\n' and #t.a == 3)\n"
        "assert(t.b.c == true and t.b.d == nil and t.e == false)\n"
        "io.write('ok')\n"
    )
    result = subprocess.run([lua, str(script)], check=False, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "ok"), result.stderr
