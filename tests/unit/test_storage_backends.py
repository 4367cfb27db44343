"""The StorageManager contract, run against every backend: shared_fs on tmp_path, S3 on moto in
server mode, GCS on gcp-storage-emulator (tests/gcs_emulator.py) through google-cloud-storage."""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from harness.storage import CheckpointNotFound, StorageManager, build_storage
from tests.gcs_emulator import admin_client, gcs_emulator
from tests.moto_logs import REGION, moto_server

BIG = 9 * 1024 * 1024 + 12345  # over the 8 MiB multipart threshold

TREE = {
    "state.json": b'{"steps_completed": 100}',
    "model/weights.bin": b"\x00\x01" * 1000,
    "model/nested/deeper/optimizer.pt": b"adam",
    "empty.txt": b"",
    "odd names/plus+percent%20 & co.bin": b"odd",
}


def write_tree(root: Path, tree: dict[str, bytes]) -> None:
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    with gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture(params=["shared_fs", "s3", "gcs"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StorageManager]:
    if request.param == "shared_fs":
        host = tmp_path / "shared"
        host.mkdir()
        yield build_storage({"type": "shared_fs", "host_path": str(host), "storage_path": "ckpt"})
    elif request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        bucket = f"checkpoints-{uuidlib.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=bucket)
        yield build_storage(
            {
                "type": "s3",
                "bucket": bucket,
                "prefix": "/experiments/7/",
                "endpoint_url": endpoint,
                "access_key": "testing",
                "secret_key": "testing",
            }
        )
    else:
        endpoint = request.getfixturevalue("gcs_endpoint")
        bucket = f"checkpoints-{uuidlib.uuid4().hex[:12]}"
        admin_client(endpoint).create_bucket(bucket)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        yield build_storage({"type": "gcs", "bucket": bucket, "prefix": "experiments/7"})


def test_round_trip_of_a_tree_with_a_big_file(storage: StorageManager, tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree = TREE | {"model/big.bin": os.urandom(BIG)}
    write_tree(src, tree)

    sizes = storage.upload(src, "c1")

    expected = {rel: len(data) for rel, data in sorted(tree.items())}
    assert sizes == expected
    assert storage.files("c1") == expected
    storage.download("c1", tmp_path / "dst")
    assert read_tree(tmp_path / "dst") == tree
    with storage.restore_path("c1") as restored:
        assert read_tree(restored) == tree


def test_store_path_saves_what_the_block_writes(storage: StorageManager) -> None:
    with storage.store_path("c2") as path:
        write_tree(path, TREE)
    assert storage.files("c2") == {rel: len(data) for rel, data in sorted(TREE.items())}
    with storage.restore_path("c2") as restored:
        assert read_tree(restored) == TREE


def test_store_path_saves_nothing_if_the_block_raises(storage: StorageManager) -> None:
    with pytest.raises(RuntimeError, match="boom"), storage.store_path("c3") as path:
        write_tree(path, TREE)
        raise RuntimeError("boom")
    with pytest.raises(CheckpointNotFound):
        storage.files("c3")


def test_uploading_again_replaces_the_checkpoint(storage: StorageManager, tmp_path: Path) -> None:
    write_tree(tmp_path / "first", {"a.bin": b"first", "old/only.bin": b"stale"})
    write_tree(tmp_path / "second", {"a.bin": b"second!", "new.bin": b"n"})
    storage.upload(tmp_path / "first", "c4")
    storage.upload(tmp_path / "second", "c4")
    assert storage.files("c4") == {"a.bin": 7, "new.bin": 1}
    storage.download("c4", tmp_path / "dst")
    assert read_tree(tmp_path / "dst") == {"a.bin": b"second!", "new.bin": b"n"}


def test_delete_is_idempotent_and_spares_other_checkpoints(
    storage: StorageManager, tmp_path: Path
) -> None:
    write_tree(tmp_path / "src", {"x.bin": b"x", "d/y.bin": b"yy"})
    for uuid in ("ab", "abc", "a"):  # prefixes of each other: keys must end at the '/'
        storage.upload(tmp_path / "src", uuid)

    storage.delete("ab")
    storage.delete("ab")
    storage.delete("never-existed")

    with pytest.raises(CheckpointNotFound):
        storage.files("ab")
    assert storage.files("abc") == {"d/y.bin": 2, "x.bin": 1}
    assert storage.files("a") == {"d/y.bin": 2, "x.bin": 1}


def test_missing_checkpoint_is_a_clear_error(storage: StorageManager, tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound) as info:
        storage.files("nope")
    assert info.value.uuid == "nope"
    assert "nope" in info.value.where
    assert str(info.value) == f"checkpoint nope not found at {info.value.where}"
    with pytest.raises(CheckpointNotFound):
        storage.download("nope", tmp_path / "dst")
    with pytest.raises(CheckpointNotFound), storage.restore_path("nope"):
        pass


@pytest.mark.parametrize("bad", ["", "..", "../etc", "a/b", "a\\b", ".hidden", "x..y"])
def test_uuids_that_could_escape_are_refused(
    storage: StorageManager, tmp_path: Path, bad: str
) -> None:
    (tmp_path / "src").mkdir()
    calls = [
        lambda: storage.files(bad),
        lambda: storage.delete(bad),
        lambda: storage.download(bad, tmp_path / "dst"),
        lambda: storage.upload(tmp_path / "src", bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid checkpoint uuid"):
            call()
    for manager in (storage.store_path, storage.restore_path):
        with pytest.raises(ValueError, match="invalid checkpoint uuid"), manager(bad):
            pass


def test_uploading_a_missing_directory_fails(storage: StorageManager, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        storage.upload(tmp_path / "missing", "c5")
