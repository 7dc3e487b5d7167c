"""The GitHub workflows: actionlint (with shellcheck on every run step) over every workflow, the
make targets CI calls, and rules every workflow must keep that actionlint does not check (actions
pinned to a commit, least privilege, no secret in a shell step, no token left in git config, no CI
setting that no test reads). What a given job contains is the workflow's own business."""

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


@pytest.mark.parametrize("target", ["lint", "typecheck", "test"])
def test_make_targets_used_by_ci_exist(target):
    # -n: print, do not run. Fails with "No rule to make target" when the target is missing.
    result = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


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
