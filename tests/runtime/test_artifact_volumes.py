"""pvc:// and oci:// artifacts: a file in the volume the operator mounts at MLMODEL_MODEL_MOUNT_DIR,
read, verified and cached like any local file, with messages that say what is not mounted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mlmodel_runtime.artifacts import ArtifactError, fetch_artifact, fetch_artifact_with_retry
from mlmodel_runtime.artifacts.uris import MountedSource, parse_source
from mlmodel_runtime.manifest import load_settings
from mlmodel_runtime.settings import RuntimeSettings
from mlmodel_spec.model_uris import MODEL_MOUNT_DIR
from support.artifacts import (
    ARTIFACT,
    ARTIFACT_SHA256,
    OTHER_ARTIFACT,
    cache_listing,
    make_settings,
)

CLAIM_URI = "pvc://models/sentiment/1.0/model.joblib"
IMAGE_URI = "oci://registry.example.com/models/sentiment:1.0"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def mount_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mounted"
    folder.mkdir()
    return folder


def _place(mount_dir: Path, relative: str, content: bytes = ARTIFACT) -> Path:
    path = mount_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_the_mount_dir_defaults_to_where_the_operator_mounts_and_reads_its_variable(monkeypatch):
    assert RuntimeSettings().model_mount_dir == Path(MODEL_MOUNT_DIR)
    monkeypatch.setenv("MLMODEL_MODEL_MOUNT_DIR", "/mnt/models")
    assert RuntimeSettings().model_mount_dir == Path("/mnt/models")


@pytest.mark.parametrize(
    ("uri", "model_format", "relative"),
    [
        (CLAIM_URI, "sklearn", "sentiment/1.0/model.joblib"),
        (IMAGE_URI, "sklearn", "model.joblib"),
        (IMAGE_URI, "onnx", "model.onnx"),
        (f"{IMAGE_URI}#onnx/sentiment.onnx", "onnx", "onnx/sentiment.onnx"),
        (f"oci://localhost:5000/m@sha256:{ARTIFACT_SHA256}#m.joblib", "sklearn", "m.joblib"),
    ],
)
def test_a_volume_uri_names_a_file_under_the_mount_dir(uri, model_format, relative):
    source = parse_source(uri, Path("/mnt/m"), model_format)
    assert isinstance(source, MountedSource)
    assert source.path == Path("/mnt/m") / relative


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://models",
        "pvc://models/../etc/passwd",
        "oci://registry.example.com/m",
        "oci://r.example.com/m:1#../x",
    ],
)
def test_a_malformed_volume_uri_is_refused_for_good(uri):
    with pytest.raises(ArtifactError) as caught:
        parse_source(uri, Path("/mnt/m"))
    assert caught.value.reason == "UnsupportedScheme"
    assert caught.value.retryable is False
    assert "pvc://CLAIM/PATH or oci://REGISTRY/REPO:TAG[#PATH]" in caught.value.message


@pytest.mark.parametrize(
    ("uri", "relative"), [(CLAIM_URI, "sentiment/1.0/model.joblib"), (IMAGE_URI, "model.joblib")]
)
async def test_the_mounted_file_is_verified_and_cached(cache_dir, mount_dir, uri, relative):
    _place(mount_dir, relative)

    path = await fetch_artifact(make_settings(cache_dir, uri, model_mount_dir=mount_dir))

    assert path == cache_dir / f"sha256-{ARTIFACT_SHA256}"
    assert path.read_bytes() == ARTIFACT


async def test_a_claim_file_with_another_digest_is_refused_and_retried(cache_dir, mount_dir):
    """Another pod may be rewriting the file on the claim: the next attempt may find the right one."""
    _place(mount_dir, "sentiment/1.0/model.joblib", OTHER_ARTIFACT)
    settings = make_settings(cache_dir, CLAIM_URI, model_mount_dir=mount_dir)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(settings)
    assert caught.value.reason == "ChecksumMismatch"
    assert caught.value.retryable is True
    assert f"but spec.model.sha256 is {ARTIFACT_SHA256}" in caught.value.message
    assert cache_listing(cache_dir) == []

    seen: list[str] = []

    def fix_after_first(error: ArtifactError) -> None:
        seen.append(error.reason)
        _place(mount_dir, "sentiment/1.0/model.joblib")

    path = await asyncio.wait_for(fetch_artifact_with_retry(settings, fix_after_first), 10)
    assert seen == ["ChecksumMismatch"]
    assert path.read_bytes() == ARTIFACT


async def test_an_image_file_with_another_digest_is_refused_for_good(cache_dir, mount_dir):
    _place(mount_dir, "model.joblib", OTHER_ARTIFACT)

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(make_settings(cache_dir, IMAGE_URI, model_mount_dir=mount_dir))

    assert caught.value.reason == "ChecksumMismatch"
    assert caught.value.retryable is False
    assert cache_listing(cache_dir) == []


async def test_a_file_missing_from_the_claim_is_named(cache_dir, mount_dir):
    _place(mount_dir, "sentiment/0.9/model.joblib")

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(make_settings(cache_dir, CLAIM_URI, model_mount_dir=mount_dir))

    assert caught.value.reason == "ArtifactNotFound"
    assert caught.value.retryable is True
    assert (
        f"no file sentiment/1.0/model.joblib in the PersistentVolumeClaim models mounted at {mount_dir}"
        in caught.value.message
    )


async def test_an_image_volume_not_mounted_says_what_the_cluster_needs(cache_dir, tmp_path):
    settings = make_settings(cache_dir, IMAGE_URI, model_mount_dir=tmp_path / "absent")

    with pytest.raises(ArtifactError) as caught:
        await fetch_artifact(settings)

    message = caught.value.message
    assert caught.value.reason == "ArtifactNotFound"
    assert (
        f"nothing is mounted at {tmp_path / 'absent'}, where the operator mounts the image volume "
        "registry.example.com/models/sentiment:1.0" in message
    )
    assert "Kubernetes 1.35 or later" in message
    assert "ImageVolume feature gate" in message


@pytest.mark.parametrize(
    ("example", "relative"),
    [("claim.yaml", "sentiment/1.0.0/model.joblib"), ("image.yaml", "model.joblib")],
)
async def test_serve_reads_the_volume_examples_from_a_local_mount_dir(
    cache_dir, mount_dir, monkeypatch, example, relative
):
    """`MLMODEL_MODEL_MOUNT_DIR=DIR mlmodel serve examples/sentiment/volumes/X.yaml` (docs/model-sources.md)."""
    model = REPO_ROOT / "examples" / "sentiment" / "model.joblib"
    _place(mount_dir, relative, model.read_bytes())
    monkeypatch.setenv("MLMODEL_MODEL_MOUNT_DIR", str(mount_dir))
    monkeypatch.setenv("MLMODEL_CACHE_DIR", str(cache_dir))

    settings = load_settings(REPO_ROOT / "examples" / "sentiment" / "volumes" / example)

    assert settings.model_uri.startswith(("pvc://", "oci://"))
    path = await fetch_artifact(settings)
    assert path.read_bytes() == model.read_bytes()
