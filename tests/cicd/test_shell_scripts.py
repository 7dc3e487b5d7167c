"""The CI scripts under .ci/ pass shellcheck (the same checker actionlint runs on workflow steps)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cicd_support import REPO_ROOT


def shell_scripts() -> list[Path]:
    """Every file in .ci/ that bash runs: *.sh, and extensionless ones with a bash shebang."""
    scripts = []
    for path in sorted((REPO_ROOT / ".ci").iterdir()):
        if not path.is_file():
            continue
        with path.open("rb") as file:
            first_line = file.readline()
        if path.suffix == ".sh" or (first_line.startswith(b"#!") and b"bash" in first_line):
            scripts.append(path)
    return scripts


def test_the_ci_scripts_are_found():
    names = {path.name for path in shell_scripts()}
    assert {"run", "system-packages.sh", "start-docker.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda path: path.name)
def test_shellcheck(shellcheck, script):
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "--external-sources", str(script)],
        check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_finds_problems_when_there_are_some(shellcheck, tmp_path):
    # The parametrized check above can fail.
    script = tmp_path / "bad.sh"
    script.write_text("#!/usr/bin/env bash\nfor f in $(ls *.txt); do rm $f; done\n")
    result = subprocess.run([shellcheck, str(script)], check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "SC2045" in result.stdout or "SC2086" in result.stdout
