"""The GitHub workflows: actionlint (with shellcheck on every run step) and the promises the
issue makes about them: pinned actions, least privilege, concurrency, what gets built and pushed."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from cicd_support import REPO_ROOT, workflow_paths

PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s+(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)(?P<comment>\s+#\s*(?P<version>\S+))?\s*$"
)
LOCAL_USES = re.compile(r"^\s*(?:-\s+)?uses:\s+\./")


def run_actionlint(actionlint: str, paths: list[Path], shellcheck: str, cwd: Path):
    return subprocess.run(
        [actionlint, "-no-color", "-oneline", f"-shellcheck={shellcheck}", "-pyflakes=",
         *map(str, paths)],
        check=False, capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def step_using(job: dict, action: str) -> list[dict]:
    return [step for step in steps(job) if step.get("uses", "").split("@")[0] == action]


def test_the_expected_workflows_exist():
    assert {path.name for path in workflow_paths()} >= {"ci.yml", "release.yml"}


def test_every_workflow_passes_actionlint_with_shellcheck(actionlint, shellcheck):
    result = run_actionlint(actionlint, workflow_paths(), shellcheck, REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_really_runs_shellcheck_on_run_steps(actionlint, shellcheck, tmp_path):
    # The same unquoted expansion is reported with shellcheck and missed without it: proof
    # that the check above runs shellcheck rather than silently skipping it.
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    bad = workflows / "bad.yml"
    bad.write_text(textwrap.dedent("""\
        name: bad
        on: push
        permissions: {}
        jobs:
          build:
            runs-on: ubuntu-24.04
            steps:
              - run: |
                  files=$(ls)
                  rm $files
        """))
    with_shellcheck = run_actionlint(actionlint, [bad], shellcheck, tmp_path)
    assert with_shellcheck.returncode == 1, with_shellcheck.stdout + with_shellcheck.stderr
    assert "shellcheck reported issue" in with_shellcheck.stdout
    assert "SC2086" in with_shellcheck.stdout

    without = run_actionlint(actionlint, [bad], "", tmp_path)
    assert without.returncode == 0, without.stdout + without.stderr


@pytest.mark.parametrize("path", workflow_paths(), ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_commit_sha_with_its_version(path):
    uses_lines = [line for line in path.read_text().splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
    assert uses_lines
    for line in uses_lines:
        if LOCAL_USES.match(line):
            continue
        match = PINNED_USES.match(line)
        assert match, f"unparsable uses: {line!r}"
        assert re.fullmatch(r"[0-9a-f]{40}", match["ref"]), f"not pinned to a full SHA: {line!r}"
        assert match["version"] and re.fullmatch(r"v\d+\.\d+\.\d+", match["version"]), (
            f"pinned SHA without its exact version comment: {line!r}"
        )


def test_one_sha_per_action_across_workflows():
    # Two different SHAs for one action means one of them was not updated.
    seen: dict[str, set[str]] = {}
    for path in workflow_paths():
        for line in path.read_text().splitlines():
            match = PINNED_USES.match(line)
            if match:
                seen.setdefault(match["action"], set()).add(f"{match['ref']} {match['version']}")
    assert seen
    assert {action: refs for action, refs in seen.items() if len(refs) > 1} == {}


@pytest.mark.parametrize("name", ["ci", "release"])
def test_least_privilege_permissions(workflows, name):
    workflow = workflows[name]
    # Nothing by default; each job asks for exactly what it uses.
    assert workflow["permissions"] == {}
    for job_name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{name}.{job_name} has no permissions block"
        permissions = job["permissions"]
        assert isinstance(permissions, dict), f"{name}.{job_name}: {permissions!r}"
        assert set(permissions.values()) <= {"read", "write", "none"}


def test_write_permissions_only_where_needed(workflows):
    writes = {
        (workflow_name, job_name): sorted(k for k, v in job["permissions"].items() if v == "write")
        for workflow_name, workflow in workflows.items()
        for job_name, job in workflow["jobs"].items()
        if "write" in job["permissions"].values()
    }
    assert writes == {
        ("release", "images"): ["packages"],
        ("release", "deploy"): ["contents", "pull-requests"],
    }


@pytest.mark.parametrize("name", ["ci", "release"])
def test_concurrency_groups(workflows, name):
    concurrency = workflows[name]["concurrency"]
    assert "github.ref" in concurrency["group"]


def test_release_runs_queue_instead_of_racing_or_cancelling(workflows):
    # Cancelling a publish half-way could leave one registry ahead of the other.
    assert workflows["release"]["concurrency"]["cancel-in-progress"] is False


def test_ci_triggers_and_jobs(workflows):
    ci = workflows["ci"]
    assert set(ci["on"]) == {"pull_request", "push", "workflow_call"}
    # main is covered by release.yml calling this workflow; no double run there.
    assert ci["on"]["push"] == {"branches-ignore": ["main"]}
    assert set(ci["jobs"]) == {"lint", "typecheck", "test"}
    commands = {name: " ".join(step.get("run", "") for step in steps(job))
                for name, job in ci["jobs"].items()}
    assert "make lint" in commands["lint"]
    assert "make typecheck" in commands["typecheck"]
    assert "make test" in commands["test"]


@pytest.mark.parametrize("target", ["lint", "typecheck", "test"])
def test_make_targets_used_by_ci_exist(target):
    # -n: print, do not run. Fails with "No rule to make target" when the target is missing.
    result = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_mypy_is_configured_for_both_packages():
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert set(config["files"]) == {"runtime/mlmodel_runtime", "operator/mlmodel_operator"}


def test_ci_tests_get_a_postgresql_service(workflows):
    job = workflows["ci"]["jobs"]["test"]
    service = job["services"]["postgres"]
    assert service["image"].startswith("postgres:")
    assert "5432:5432" in service["ports"]
    assert "pg_isready" in service["options"]
    assert job["env"]["MLMODEL_TEST_DATABASE_URL"].startswith("postgresql://")
    assert ":5432/" in job["env"]["MLMODEL_TEST_DATABASE_URL"]


def test_release_triggers_on_main_and_version_tags_only(workflows):
    on = workflows["release"]["on"]
    assert set(on) == {"push"}
    assert on["push"]["branches"] == ["main"]
    assert all(tag.startswith("v") for tag in on["push"]["tags"])


def test_images_are_published_only_after_ci(workflows):
    jobs = workflows["release"]["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["images"]["needs"] == "ci"
    assert jobs["deploy"]["needs"] == "images"


def test_both_images_built_for_two_platforms_with_attestations_and_cache(workflows):
    job = workflows["release"]["jobs"]["images"]
    images = job["strategy"]["matrix"]["image"]
    assert sorted(images) == ["operator", "runtime"]
    for image in images:
        assert (REPO_ROOT / f"Dockerfile.{image}").is_file(), f"Dockerfile.{image} missing"

    assert step_using(job, "docker/setup-qemu-action")
    assert step_using(job, "docker/setup-buildx-action")
    (build,) = step_using(job, "docker/build-push-action")
    options = build["with"]
    assert options["file"] == "Dockerfile.${{ matrix.image }}"
    assert set(options["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert options["push"] is True
    assert options["sbom"] is True
    assert options["provenance"] == "mode=max"
    assert options["cache-from"].startswith("type=gha")
    assert options["cache-to"].startswith("type=gha") and "mode=max" in options["cache-to"]
    assert options["tags"] == "${{ steps.meta.outputs.tags }}"


def test_image_tags_semver_sha_and_latest_on_main_only(workflows):
    job = workflows["release"]["jobs"]["images"]
    (meta,) = step_using(job, "docker/metadata-action")
    tags = [line.strip() for line in meta["with"]["tags"].splitlines() if line.strip()]
    assert "type=semver,pattern={{version}}" in tags
    assert "type=sha,prefix=sha-,format=short" in tags
    assert "type=raw,value=latest,enable={{is_default_branch}}" in tags
    # Without this, metadata-action also tags `latest` on every semver tag.
    assert "latest=false" in meta["with"]["flavor"]
    images = meta["with"]["images"]
    assert "steps.names.outputs.ghcr" in images and "steps.names.outputs.dockerhub" in images


def test_both_registries_logged_in_from_secrets(workflows):
    job = workflows["release"]["jobs"]["images"]
    logins = {step["with"]["registry"]: step["with"] for step in step_using(job, "docker/login-action")}
    assert set(logins) == {"ghcr.io", "docker.io"}
    assert logins["ghcr.io"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert logins["docker.io"]["username"] == "${{ secrets.DOCKERHUB_USERNAME }}"
    assert logins["docker.io"]["password"] == "${{ secrets.DOCKERHUB_TOKEN }}"


@pytest.mark.parametrize("path", workflow_paths(), ids=lambda path: path.name)
def test_no_run_step_touches_a_secret(path, workflows):
    # Secrets go only into action inputs; a shell step could echo them into the log.
    workflow = workflows[path.stem]
    for job in workflow["jobs"].values():
        for step in steps(job):
            assert "secrets." not in step.get("run", "")
            assert all("secrets." not in str(value) for value in (step.get("env") or {}).values())


def test_checkouts_do_not_leave_the_token_in_git_config(workflows):
    for workflow in workflows.values():
        for job in workflow["jobs"].values():
            for step in step_using(job, "actions/checkout"):
                assert step["with"]["persist-credentials"] is False


def test_deploy_opens_a_pull_request_on_version_tags_only(workflows):
    job = workflows["release"]["jobs"]["deploy"]
    assert job["if"] == "startsWith(github.ref, 'refs/tags/v')"
    script = "\n".join(step.get("run", "") for step in steps(job))
    assert "kustomize edit set image" in script
    for directory in ("operator/deploy", "examples/gitops/overlays/staging"):
        assert f"cd {directory}" in script
        assert (REPO_ROOT / directory / "kustomization.yaml").is_file()
    (pull_request,) = step_using(job, "peter-evans/create-pull-request")
    assert pull_request["with"]["branch"] == "deploy/${{ github.ref_name }}"


def test_every_test_setting_ci_passes_is_read_by_the_tests(workflows):
    # A variable nobody reads would make the CI service (or image) silently unused.
    variables = [name for name in workflows["ci"]["jobs"]["test"]["env"]
                 if name.startswith("MLMODEL_TEST_")]
    assert variables
    sources = "\n".join(
        path.read_text() for path in (REPO_ROOT / "tests").rglob("*.py")
        if "cicd" not in path.parts
    )
    unread = [name for name in variables if name not in sources]
    assert unread == [], f"set in ci.yml but read by no test: {unread}"
