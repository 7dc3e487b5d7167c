"""Paths and helpers of the CI/CD and GitOps tests (a module name no other test area uses)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
GITOPS_DIR = REPO_ROOT / "examples" / "gitops"
# kubectl embeds kustomize; GitHub runners and this project's machines both ship it.
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def workflow_paths() -> list[Path]:
    return sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])


def load_workflow(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def kustomize_build(directory: Path) -> list[dict]:
    """`kubectl kustomize DIR` parsed into its objects (kubectl embeds kustomize)."""
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
