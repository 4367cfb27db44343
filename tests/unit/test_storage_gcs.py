"""GCS specifics against gcp-storage-emulator through google-cloud-storage: object names,
resumable uploads, parallel transfers, retries, checksums, credentials.

Faults (503s, a corrupted download) come from tests/gcs_emulator.py's proxy in front of the
emulator, since the emulator itself never fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import google.auth
import google.auth.exceptions
import pytest
from google.auth.credentials import AnonymousCredentials

from harness.experiment_config import GCSStorage
from harness.storage import build_storage, gcs
from harness.storage.gcs import GCSCredentialsError, GCSError, GCSStorageManager, make_client
from tests.gcs_emulator import admin_client, faulty_proxy, gcs_emulator

CONFIG = GCSStorage(type="gcs", bucket="ckpt", prefix="exp/3")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_OAUTH_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with gcs_emulator("ckpt") as endpoint:
        yield endpoint


@pytest.fixture
def storage(emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[GCSStorageManager]:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    manager = build_storage(CONFIG)
    assert isinstance(manager, GCSStorageManager)
    yield manager
    for blob in admin_client(emulator).list_blobs("ckpt"):
        blob.delete()
    manager.close()


def names(endpoint: str, bucket: str = "ckpt") -> list[str]:
    return sorted(blob.name for blob in admin_client(endpoint).list_blobs(bucket))


def test_objects_are_named_prefix_uuid_path(
    storage: GCSStorageManager, emulator: str, tmp_path: Path
) -> None:
    (tmp_path / "src" / "a b").mkdir(parents=True)
    (tmp_path / "src" / "a b" / "c%d+e.bin").write_bytes(b"12")
    (tmp_path / "src" / "top.bin").write_bytes(b"t")
    storage.upload(tmp_path / "src", "u1")
    assert names(emulator) == ["exp/3/u1/a b/c%d+e.bin", "exp/3/u1/top.bin"]
    assert storage.location("u1") == "gs://ckpt/exp/3/u1/"
    storage.download("u1", tmp_path / "dst")
    assert (tmp_path / "dst" / "a b" / "c%d+e.bin").read_bytes() == b"12"


def test_a_big_file_goes_up_resumably_in_chunks(emulator: str, tmp_path: Path) -> None:
    data = os.urandom(gcs.RESUMABLE_THRESHOLD + gcs.CHUNK_SIZE // 2)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(data)
    (tmp_path / "src" / "small.bin").write_bytes(b"s")
    with faulty_proxy(emulator) as (endpoint, proxy):
        storage = GCSStorageManager(CONFIG, client=admin_client(endpoint))
        storage.upload(tmp_path / "src", "u2")
        uploads = [path for method, path in proxy.requests if method == "POST"]
        chunks = [path for method, path in proxy.requests if method == "PUT"]
        storage.download("u2", tmp_path / "dst")
        storage.delete("u2")
    assert sum("uploadType=resumable" in path for path in uploads) == 1
    assert sum("uploadType=multipart" in path for path in uploads) == 1  # the small file
    assert len(chunks) == 2  # a full chunk, then the rest
    assert (tmp_path / "dst" / "big.bin").read_bytes() == data


def test_transient_failures_are_retried_by_the_library(emulator: str, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data")
    (tmp_path / "src" / "g").write_bytes(b"more")
    with faulty_proxy(emulator) as (endpoint, proxy):
        storage = GCSStorageManager(CONFIG, client=admin_client(endpoint))
        proxy.fail_next = 2  # the stale-object listing, then one upload
        storage.upload(tmp_path / "src", "u3")
        proxy.fail_next = 2
        assert storage.files("u3") == {"f": 4, "g": 4}
        proxy.fail_next = 1
        storage.download("u3", tmp_path / "dst")
        proxy.fail_next = 1
        storage.delete("u3")
        assert proxy.fail_next == 0
    assert (tmp_path / "dst" / "f").read_bytes() == b"data"
    assert names(emulator) == []


def test_a_corrupted_download_fails_its_checksum(
    storage: GCSStorageManager, emulator: str, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "weights.bin").write_bytes(b"precious bytes")
    storage.upload(tmp_path / "src", "u4")
    with faulty_proxy(emulator) as (endpoint, proxy):
        proxy.corrupt_downloads = True
        via_proxy = GCSStorageManager(CONFIG, client=admin_client(endpoint))
        with pytest.raises(GCSError, match=r"exp/3/u4/weights.bin: .*(?i:checksum)"):
            via_proxy.download("u4", tmp_path / "dst")
    assert not (tmp_path / "dst" / "weights.bin").exists()  # no corrupt file left behind


def test_a_missing_bucket_is_reported(emulator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    storage = build_storage({"type": "gcs", "bucket": "nope"})
    with pytest.raises(GCSError, match=r"listing gs://nope/u1/: HTTP 404"):
        storage.files("u1")


def test_an_emulator_host_without_scheme_is_used_anonymously(
    emulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.removeprefix("http://"))
    assert gcs.emulator_host() == emulator
    client = make_client()
    assert isinstance(client._credentials, AnonymousCredentials)
    (tmp_path / "f").write_bytes(b"x")
    storage = GCSStorageManager(CONFIG, client=client)
    storage.upload(tmp_path, "u5")
    assert storage.files("u5") == {"f": 1}
    storage.delete("u5")


def test_an_access_token_from_the_environment_is_sent(
    emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with faulty_proxy(emulator) as (endpoint, proxy):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "explicit-token")
        GCSStorageManager(CONFIG).delete("u6")
    assert proxy.authorizations
    assert set(proxy.authorizations) == {"Bearer explicit-token"}


def test_no_credentials_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_default(scopes: list[str]) -> None:
        raise google.auth.exceptions.DefaultCredentialsError("none found")

    monkeypatch.setattr(google.auth, "default", no_default)
    with pytest.raises(GCSCredentialsError, match=r"GOOGLE_OAUTH_ACCESS_TOKEN.*none found"):
        make_client()
