"""shared_fs specifics: where checkpoints land, atomic publication, host_path checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.experiment_config import SharedFSStorage
from harness.storage import CheckpointNotFound, build_storage
from harness.storage.shared_fs import SharedFSStorageManager, storage_root


def manager(host: Path, storage_path: str | None = None) -> SharedFSStorageManager:
    return SharedFSStorageManager(
        SharedFSStorage(type="shared_fs", host_path=str(host), storage_path=storage_path)
    )


def test_checkpoints_land_in_host_path_storage_path_uuid(tmp_path: Path) -> None:
    storage = manager(tmp_path, "team/ckpt")
    with storage.store_path("u1") as path:
        (path / "sub").mkdir()
        (path / "sub" / "w.bin").write_bytes(b"1234")
    assert (tmp_path / "team" / "ckpt" / "u1" / "sub" / "w.bin").read_bytes() == b"1234"
    assert storage.files("u1") == {"sub/w.bin": 4}
    assert storage.location("u1") == str(tmp_path / "team" / "ckpt" / "u1")


def test_without_storage_path_checkpoints_sit_in_host_path(tmp_path: Path) -> None:
    storage = manager(tmp_path)
    with storage.store_path("u1") as path:
        (path / "a").write_text("a")
    assert (tmp_path / "u1" / "a").is_file()


def test_restore_path_is_the_checkpoint_directory_itself(tmp_path: Path) -> None:
    storage = manager(tmp_path, "ckpt")
    with storage.store_path("u1") as path:
        (path / "a").write_text("a")
    with storage.restore_path("u1") as restored:
        assert restored == tmp_path / "ckpt" / "u1"


def test_a_checkpoint_being_written_is_invisible_until_the_block_ends(tmp_path: Path) -> None:
    storage = manager(tmp_path, "ckpt")
    with storage.store_path("u1") as path:
        (path / "half.bin").write_bytes(b"half")
        assert path.parent == tmp_path / "ckpt"
        assert path.name.startswith(".u1.partial-")
        assert not (tmp_path / "ckpt" / "u1").exists()
        with pytest.raises(CheckpointNotFound):
            storage.files("u1")
    assert storage.files("u1") == {"half.bin": 4}
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["u1"]


def test_a_failed_store_leaves_nothing_behind(tmp_path: Path) -> None:
    storage = manager(tmp_path, "ckpt")
    with pytest.raises(KeyboardInterrupt), storage.store_path("u1") as path:
        (path / "half.bin").write_bytes(b"half")
        raise KeyboardInterrupt  # even a BaseException: a trial killed mid-save
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_replacing_and_deleting_leave_no_hidden_directories(tmp_path: Path) -> None:
    storage = manager(tmp_path, "ckpt")
    for content in (b"one", b"two"):
        with storage.store_path("u1") as path:
            (path / "f").write_bytes(content)
    assert (tmp_path / "ckpt" / "u1" / "f").read_bytes() == b"two"
    storage.delete("u1")
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_a_missing_host_path_is_not_created(tmp_path: Path) -> None:
    """It is most likely an unmounted shared file system; writing locally would lose data."""
    storage = manager(tmp_path / "not-mounted", "ckpt")
    with (
        pytest.raises(FileNotFoundError, match="is the shared file system mounted"),
        storage.store_path("u1"),
    ):
        pass
    assert not (tmp_path / "not-mounted").exists()


def test_storage_path_must_stay_inside_host_path(tmp_path: Path) -> None:
    assert storage_root(str(tmp_path), str(tmp_path / "in" / "side")) == tmp_path / "in" / "side"
    assert storage_root(str(tmp_path), "a/../b") == tmp_path / "b"
    for outside in ("..", "../elsewhere", "/etc", "a/../../b"):
        with pytest.raises(ValueError, match="must be a subdirectory of host_path"):
            storage_root(str(tmp_path), outside)


def test_host_path_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="must be an absolute path"):
        build_storage({"type": "shared_fs", "host_path": "relative/dir"})
