"""``det checkpoint`` and ``det experiment list-checkpoints`` against the fake master of
``test_cli_experiment_fake``: listing, describing, and downloading through the master (tar
streams, including malicious ones) or straight from a ``shared_fs`` storage directory."""

from __future__ import annotations

import csv
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from tests.unit.test_cli_experiment_fake import (  # noqa: F401  (fixtures by name)
    UUID,
    Det,
    ExperimentFake,
    cli_env_fixture,
    det_fixture,
    exp_fake_fixture,
    make_checkpoint,
    make_experiment,
)

OTHER = "1f00aa00-2222-4333-8444-555566667777"
THIRD = "2e00bb00-3333-4444-8555-666677778888"
CONTENT = f"/api/v1/checkpoints/{UUID}/content"
FILES = {"state.pt": b"weights", "model/config.json": b"{}"}


def make_tar(
    files: dict[str, bytes], *, gzip: bool = False, extra: list[tarfile.TarInfo] = ()
) -> bytes:
    """A tar of ``files`` (with directory entries), plus hand-made ``extra`` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        for name, data in files.items():
            if "/" in name:
                info = tarfile.TarInfo(name.rsplit("/", 1)[0])
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.fixture(name="work")
def work_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory for downloads (the default output is relative to it)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def setup(fake: ExperimentFake) -> None:
    fake.experiments[1] = make_experiment(1)
    fake.checkpoints[UUID] = make_checkpoint(UUID, 1, 1, 0.5, steps=100)
    fake.checkpoints[OTHER] = make_checkpoint(OTHER, 2, 1, 0.25, steps=200)
    fake.checkpoints[THIRD] = make_checkpoint(THIRD, 2, 1, None, steps=300)


# ---- listing and describing ------------------------------------------------------------------


def test_list_checkpoints_like_determined(exp_fake: ExperimentFake, det: Det) -> None:
    setup(exp_fake)
    result = det("experiment", "list-checkpoints", "1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == [
        "Trial ID",
        "# of Batches",
        "State",
        "Validation Metric",
        "UUID",
        "Resources",
        "Size",
    ]
    assert [c.strip() for c in lines[2].split("|")] == [
        "1",
        "100",
        "COMPLETED",
        "0.5",
        UUID,
        "metadata.json",
        "2.1KB",
    ]
    assert [c.strip() for c in lines[3].split("|")] == ["", "", "", "", "", "state.pt", ""]
    query = exp_fake.query("GET", "/api/v1/experiments/1/checkpoints")
    assert query == {"sortByAttr": ["SORT_BY_END_TIME"]}


def test_list_best_keeps_the_best_validated_ones(exp_fake: ExperimentFake, det: Det) -> None:
    setup(exp_fake)
    result = det("e", "lc", "1", "--best", "2", "--csv")
    rows = list(csv.reader(io.StringIO(result.out)))[1:]
    assert [row[4] for row in rows] == [OTHER, UUID]  # the third has no validation
    assert rows[0][5] == "metadata.json\nstate.pt"
    query = exp_fake.query("GET", "/api/v1/experiments/1/checkpoints")
    assert query == {"sortByAttr": ["SORT_BY_SEARCHER_METRIC"], "limit": ["2"]}
    listed = json.loads(det("e", "lc", "1", "--best", "1", "--json").out)
    assert [c["uuid"] for c in listed] == [OTHER]


def test_describe_checkpoint(exp_fake: ExperimentFake, det: Det) -> None:
    setup(exp_fake)
    result = det("checkpoint", "describe", UUID)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == [
        "Experiment ID",
        "Trial ID",
        "Steps Completed",
        "Report Time",
        "Checkpoint UUID",
        "Validation Metrics",
        "Metadata",
    ]
    assert [c.strip() for c in lines[2].split("|")][:6] == [
        "1",
        "1",
        "100",
        "2024-05-01 12:30:00+0000",
        UUID,
        "{",
    ]
    assert json.loads(det("c", "describe", UUID, "--json").out)["uuid"] == UUID
    result = det("c", "describe", "nope")
    assert result.err == "Failed to describe checkpoint: checkpoint nope not found\n"


# ---- downloading through the master ----------------------------------------------------------


@pytest.mark.parametrize("gzip", [False, True])
def test_master_mode_extracts_the_tar_into_checkpoints_uuid(
    exp_fake: ExperimentFake, det: Det, work: Path, gzip: bool
) -> None:
    setup(exp_fake)
    exp_fake.contents[UUID] = make_tar(FILES, gzip=gzip)
    result = det("checkpoint", "download", UUID, "--mode", "master")
    assert result.code == 0, result.err
    out = work / "checkpoints" / UUID
    assert (out / "state.pt").read_bytes() == b"weights"
    assert (out / "model" / "config.json").read_bytes() == b"{}"
    # Like Determined: the metadata is written when the checkpoint has no metadata.json.
    assert json.loads((out / "metadata.json").read_text()) == {
        "steps_completed": 100,
        "framework": "torch",
    }
    assert result.out.startswith(f"Local checkpoint path:\ncheckpoints/{UUID} \n\n")
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == [UUID]  # no staging left
    assert exp_fake.calls("GET", CONTENT) == [None]


def test_quiet_and_output_dir(exp_fake: ExperimentFake, det: Det, work: Path) -> None:
    setup(exp_fake)
    exp_fake.contents[UUID] = make_tar(FILES)
    result = det("c", "download", UUID, "--mode", "master", "-q", "-o", "deep/ckpt")
    assert (result.code, result.out) == (0, "deep/ckpt\n")
    assert (work / "deep" / "ckpt" / "state.pt").exists()
    # A directory that already holds a checkpoint is not downloaded again.
    result = det("c", "download", UUID, "--mode", "master", "-q", "-o", "deep/ckpt")
    assert (
        result.err
        == "deep/ckpt already holds a checkpoint (metadata.json); not downloading it again\n"
    )
    assert len(exp_fake.calls("GET", CONTENT)) == 1


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (member("../evil.sh"), "'../evil.sh' would be written outside the output directory"),
        (member("model/../../evil"), "'model/../../evil' would be written outside"),
        (member("/tmp/evil"), "'/tmp/evil' would be written outside the output directory"),
        (
            member("link", tarfile.SYMTYPE, "/etc/passwd"),
            "'link' links outside the checkpoint ('/etc/passwd')",
        ),
        (
            member("hard", tarfile.LNKTYPE, "../../x"),
            "'hard' links outside the checkpoint ('../../x')",
        ),
        (member("dev", tarfile.CHRTYPE), "'dev' is a device or pipe"),
    ],
)
def test_master_mode_refuses_a_malicious_tar_and_writes_nothing(
    exp_fake: ExperimentFake, det: Det, work: Path, extra: tarfile.TarInfo, named: str
) -> None:
    setup(exp_fake)
    exp_fake.contents[UUID] = make_tar(FILES, extra=[extra])
    result = det("c", "download", UUID, "--mode", "master")
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith(f"refusing checkpoint {UUID} from the master: tar member ")
    assert named in result.err
    assert "(no '..') are allowed" in result.err
    assert list((work / "checkpoints").iterdir()) == []  # not even the files before it
    assert not (work.parent / "evil.sh").exists()


def test_master_mode_errors(exp_fake: ExperimentFake, det: Det, work: Path) -> None:
    setup(exp_fake)
    result = det("c", "download", UUID, "--mode", "master")
    assert result.err == "Failed to download checkpoint from persistent storage: no content\n"
    exp_fake.contents[UUID] = b"this is not a tar"
    result = det("c", "download", UUID, "--mode", "master")
    assert result.code == 1
    assert result.err.startswith(f"the master sent checkpoint {UUID} as a broken tar stream: ")
    exp_fake.checkpoints[UUID]["state"] = "STATE_DELETED"
    result = det("c", "download", UUID)
    assert result.err == (
        "Only COMPLETED or PARTIALLY_DELETED checkpoints can be downloaded. "
        "Checkpoint state: STATE_DELETED\n"
    )


# ---- downloading straight from the storage ---------------------------------------------------


@pytest.fixture(name="shared_fs")
def shared_fs_fixture(exp_fake: ExperimentFake, tmp_path: Path) -> Path:
    """Checkpoint UUID in a shared_fs storage under tmp, named by its experiment config."""
    pytest.importorskip(
        "harness.storage",
        reason="harness.storage (checkpoint storage, written separately) does not exist yet",
    )
    setup(exp_fake)
    host = tmp_path / "shared"
    ckpt_dir = host / "store" / UUID
    (ckpt_dir / "model").mkdir(parents=True)
    (ckpt_dir / "state.pt").write_bytes(b"direct weights")
    (ckpt_dir / "model" / "config.json").write_bytes(b"{}")
    config = exp_fake.checkpoints[UUID]["training"]["experimentConfig"]
    config["checkpoint_storage"] = {
        "type": "shared_fs",
        "host_path": str(host),
        "storage_path": "store",
    }
    return host


def test_direct_mode_copies_from_shared_fs(
    exp_fake: ExperimentFake, det: Det, work: Path, shared_fs: Path
) -> None:
    result = det("c", "download", UUID, "--mode", "direct", "-q")
    assert (result.code, result.out, result.err) == (0, f"checkpoints/{UUID}\n", "")
    out = work / "checkpoints" / UUID
    assert (out / "state.pt").read_bytes() == b"direct weights"
    assert (out / "model" / "config.json").exists()
    assert exp_fake.calls("GET", CONTENT) == []


def test_auto_mode_reads_shared_fs_when_it_is_here(
    exp_fake: ExperimentFake, det: Det, work: Path, shared_fs: Path
) -> None:
    result = det("c", "download", UUID, "-q")
    assert (result.code, result.err) == (0, "")
    assert (work / "checkpoints" / UUID / "state.pt").read_bytes() == b"direct weights"
    assert exp_fake.calls("GET", CONTENT) == []


def test_auto_mode_falls_back_to_the_master_when_storage_is_not_here(
    exp_fake: ExperimentFake, det: Det, work: Path, shared_fs: Path, tmp_path: Path
) -> None:
    storage = exp_fake.checkpoints[UUID]["training"]["experimentConfig"]["checkpoint_storage"]
    storage["host_path"] = str(tmp_path / "not-mounted")
    exp_fake.contents[UUID] = make_tar(FILES)
    result = det("c", "download", UUID, "-q")
    assert result.code == 0, result.err
    assert result.err.startswith("Cannot download directly: cannot read shared_fs storage from ")
    assert result.err.endswith("; downloading through the master\n")
    assert (work / "checkpoints" / UUID / "state.pt").read_bytes() == b"weights"

    result = det("c", "download", UUID, "--mode", "direct", "-o", "other")
    assert result.code == 1
    assert result.err.startswith(f"cannot download checkpoint {UUID} directly: reading shared_fs")
    assert result.err.endswith("; try --mode master\n")
    assert not (work / "other").exists()


def test_direct_mode_takes_the_storage_from_the_experiment(
    exp_fake: ExperimentFake, det: Det, work: Path, shared_fs: Path
) -> None:
    config = exp_fake.checkpoints[UUID]["training"]["experimentConfig"]
    exp_fake.experiments[1]["config"]["checkpoint_storage"] = config.pop("checkpoint_storage")
    result = det("c", "download", UUID, "--mode", "direct", "-q")
    assert result.code == 0, result.err
    assert exp_fake.calls("GET", "/api/v1/experiments/1") == [None]

    del exp_fake.experiments[1]["config"]["checkpoint_storage"]
    result = det("c", "download", UUID, "--mode", "direct", "-o", "x")
    assert result.err == (
        f"cannot download checkpoint {UUID} directly: the experiment config sets no "
        "checkpoint_storage, so the master's own applies and only the master knows it; "
        "try --mode master\n"
    )


def test_best_must_be_positive(exp_fake: ExperimentFake, det: Det) -> None:
    with pytest.raises(SystemExit) as exc:
        det("e", "lc", "1", "--best", "0")
    assert exc.value.code == 2


def test_a_uuid_that_is_not_a_directory_name_is_refused(
    exp_fake: ExperimentFake, det: Det, work: Path
) -> None:
    setup(exp_fake)
    exp_fake.checkpoints[UUID]["uuid"] = "../escape"
    exp_fake.contents[UUID] = make_tar(FILES)
    result = det("c", "download", UUID, "--mode", "master")
    assert result.err == (
        "the master named checkpoint '../escape', which is not usable as a directory name; "
        "give one with -o\n"
    )
    assert list(work.iterdir()) == []


def test_without_harness_storage_auto_uses_the_master_and_direct_says_why(
    exp_fake: ExperimentFake, det: Det, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(exp_fake)
    config = exp_fake.checkpoints[UUID]["training"]["experimentConfig"]
    config["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(work)}
    exp_fake.contents[UUID] = make_tar(FILES)
    monkeypatch.setitem(sys.modules, "harness.storage", None)  # as if it were not installed
    result = det("c", "download", UUID, "--mode", "direct", "-o", "d")
    assert result.code == 1
    assert result.err.startswith(
        f"cannot download checkpoint {UUID} directly: reading checkpoint storage needs "
        "harness.storage, which cannot be imported ("
    )
    result = det("c", "download", UUID, "-q", "-o", "a")
    assert (result.code, result.out) == (0, "a\n")
    assert result.err.startswith("Cannot download directly: reading checkpoint storage needs")
