"""``det checkpoint`` (alias ``c``): describe and download checkpoints; ``det e lc`` lists them.

As in Determined, checkpoints are listed per experiment (``det experiment list-checkpoints``,
whose handler lives here), described by UUID from ``GET /api/v1/checkpoints/{uuid}``, and
downloaded in one of three modes:

- ``master``: ``GET /api/v1/checkpoints/{uuid}/content`` streams a tar (optionally compressed)
  of the checkpoint's files. Members are checked one by one as they arrive: an absolute path,
  a ``..`` component, a link pointing outside, or a device file stops the download with an error
  naming the member, and nothing reaches the output directory.
- ``direct``: read the checkpoint storage from this machine with
  ``harness.storage.build_storage``, using the experiment config's ``checkpoint_storage``
  (from the checkpoint's ``training.experimentConfig``, else from the experiment).
- ``auto`` (the default): ``direct`` when the storage is reachable from here (a ``shared_fs``
  directory that exists locally, an S3/GCS bucket the local credentials can list), else
  ``master``, with a line on stderr saying why.

Every mode writes into a staging directory next to the output and moves the files into place
only once the whole checkpoint is there, so a failed download leaves nothing half-written.
Like Determined, the default output is ``checkpoints/<uuid>``, a directory that already holds a
``metadata.json`` is taken as downloaded, and the checkpoint's metadata is written to
``metadata.json`` when the files do not include one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from cli import progress, render
from cli.errors import CliError
from cli.parser import add_group, add_verb
from cli.session import Session, setup_session
from harness.client import CONNECT_TIMEOUT_SECONDS, USER_AGENT, MasterUnreachableError, error_for

if TYPE_CHECKING:
    from cli.parser import SubParsers

LIST_HEADERS = [
    "Trial ID",
    "# of Batches",
    "State",
    "Validation Metric",
    "UUID",
    "Resources",
    "Size",
]
DOWNLOAD_MODES = ("auto", "direct", "master")
DOWNLOADABLE_STATES = ("STATE_COMPLETED", "STATE_PARTIALLY_DELETED")
METADATA_FILE = "metadata.json"


def state_name(value: Any) -> Any:
    return render.strip_prefix(value, "STATE_") if isinstance(value, str) else value


def sizeof_fmt(value: float) -> str:
    """``1536`` → ``1.5KB``: Determined's ``util.sizeof_fmt``."""
    for unit in ("", "K", "M", "G", "T", "P", "E", "Z"):
        if abs(value) < 1024.0:
            return f"{value:3.1f}{unit}B"
        value /= 1024.0
    return f"{value:.1f}YB"


def format_resources(resources: dict[str, Any] | None) -> str:
    return "" if resources is None else "\n".join(sorted(resources))


def format_resource_sizes(resources: dict[str, Any] | None) -> str:
    return "" if resources is None else sizeof_fmt(sum(float(v) for v in resources.values()))


# ---- listing ---------------------------------------------------------------------------------


def searcher_settings(
    sess: Session, experiment_id: int, checkpoints: list[Any]
) -> tuple[str, bool]:
    """The searcher metric's name and ``smaller_is_better``: from the checkpoints' copy of the
    experiment config, else from the experiment itself."""
    config: dict[str, Any] = {}
    if checkpoints:
        config = (checkpoints[0].get("training") or {}).get("experimentConfig") or {}
    if not config.get("searcher"):
        config = sess.client.get(f"/api/v1/experiments/{experiment_id}").get("config") or {}
    searcher = config.get("searcher") or {}
    return str(searcher.get("metric") or ""), bool(searcher.get("smaller_is_better", True))


def validation_metric(ckpt: dict[str, Any], metric: str) -> Any:
    """The checkpoint's value of ``metric`` among the validation metrics it was saved with."""
    metrics = (ckpt.get("training") or {}).get("validationMetrics") or {}
    return (metrics.get("avgMetrics") or {}).get(metric)


def best_checkpoints(
    checkpoints: list[dict[str, Any]], metric: str, smaller_is_better: bool, count: int
) -> list[dict[str, Any]]:
    """The best ``count`` checkpoints that have a value of the searcher metric."""
    scored = [c for c in checkpoints if isinstance(validation_metric(c, metric), int | float)]
    scored.sort(key=lambda c: validation_metric(c, metric), reverse=not smaller_is_better)
    return scored[:count]


def list_checkpoints(args: argparse.Namespace) -> None:
    """``det experiment list-checkpoints ID [--best N]``, with Determined's columns."""
    sess = setup_session(args)
    params: dict[str, Any] = {
        "sortByAttr": "SORT_BY_SEARCHER_METRIC" if args.best else "SORT_BY_END_TIME",
        "limit": args.best,
    }
    answer = sess.client.get(f"/api/v1/experiments/{args.experiment_id}/checkpoints", params)
    checkpoints: list[dict[str, Any]] = answer.get("checkpoints") or []
    metric, smaller_is_better = searcher_settings(sess, args.experiment_id, checkpoints)
    if args.best is not None:
        checkpoints = best_checkpoints(checkpoints, metric, smaller_is_better, args.best)
    if args.json:
        render.print_json(checkpoints)
        return
    rows = []
    for c in checkpoints:
        value = validation_metric(c, metric)
        rows.append(
            [
                (c.get("training") or {}).get("trialId"),
                (c.get("metadata") or {}).get("steps_completed"),
                state_name(c.get("state")),
                "" if value is None else str(value),
                c.get("uuid"),
                format_resources(c.get("resources")),
                format_resource_sizes(c.get("resources")),
            ]
        )
    render.print_table(LIST_HEADERS, rows, as_csv=args.csv)


# ---- describing ------------------------------------------------------------------------------


def get_checkpoint(sess: Session, uuid: str) -> dict[str, Any]:
    answer = sess.client.get(f"/api/v1/checkpoints/{quote(uuid, safe='')}")
    ckpt: dict[str, Any] = answer["checkpoint"]
    return ckpt


def render_checkpoint(ckpt: dict[str, Any], path: pathlib.Path | None = None) -> None:
    """Determined's one-row checkpoint table, after the local path when there is one."""
    if path is not None:
        print("Local checkpoint path:")
        print(path, "\n")
    training = ckpt.get("training") or {}
    metadata = ckpt.get("metadata") or {}
    validation = training.get("validationMetrics")
    table: list[tuple[str, Any]] = [
        ("Experiment ID", training.get("experimentId")),
        ("Trial ID", training.get("trialId")),
        ("Steps Completed", metadata.get("steps_completed")),
        ("Report Time", render.format_time(ckpt.get("reportTime"))),
        ("Checkpoint UUID", ckpt.get("uuid")),
        ("Validation Metrics", json.dumps(validation, indent=4) if training else None),
        ("Metadata", json.dumps(metadata, indent=4)),
    ]
    render.print_table([h for h, _ in table], [[v for _, v in table]])


def describe(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    ckpt = get_checkpoint(sess, args.uuid)
    if args.json:
        render.print_json(ckpt)
        return
    render_checkpoint(ckpt)


# ---- downloading: through the master -----------------------------------------------------------


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (an HTTP body), for ``tarfile``."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _unsafe_path(name: str) -> bool:
    path = pathlib.PurePosixPath(name)
    return path.is_absolute() or name.startswith("\\") or ".." in path.parts


def check_member(uuid: str, member: tarfile.TarInfo) -> None:
    """Refuse a tar member that could write outside the output directory."""
    problem = None
    if _unsafe_path(member.name):
        problem = f"tar member {member.name!r} would be written outside the output directory"
    elif (member.issym() or member.islnk()) and _unsafe_path(member.linkname):
        problem = f"tar member {member.name!r} links outside the checkpoint ({member.linkname!r})"
    elif not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        problem = f"tar member {member.name!r} is a device or pipe"
    if problem:
        raise CliError(
            f"refusing checkpoint {uuid} from the master: {problem}; only regular files, "
            "directories and links with relative paths inside the checkpoint (no '..') are allowed"
        )


def extract_tar(uuid: str, fileobj: Any, dst: pathlib.Path) -> None:
    """Extract a tar stream into ``dst``, checking each member before it is written."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                check_member(uuid, member)
                tar.extract(member, dst, filter="data")
    except (tarfile.TarError, EOFError) as e:
        raise CliError(f"the master sent checkpoint {uuid} as a broken tar stream: {e}") from None


def _counted(chunks: Iterator[bytes], bar: progress.Bar) -> Iterator[bytes]:
    for chunk in chunks:
        bar.advance(len(chunk))
        yield chunk


def download_via_master(
    sess: Session, uuid: str, dst: pathlib.Path, total: int | None = None
) -> None:
    """Stream ``GET /api/v1/checkpoints/{uuid}/content`` (a tar) into ``dst``; a bar (on a
    terminal) counts the bytes against ``total``, the checkpoint's size where known."""
    client = sess.client
    path = f"/api/v1/checkpoints/{quote(uuid, safe='')}/content"
    headers = {"User-Agent": USER_AGENT}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS)
    try:
        with httpx.stream("GET", client.master + path, headers=headers, timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                try:
                    body = resp.json()
                except ValueError:
                    body = None
                raise error_for(resp.status_code, body, path=path, text=resp.text)
            with progress.transfer(f"Downloading {uuid}", total) as bar:
                extract_tar(uuid, _ChunkReader(_counted(resp.iter_bytes(), bar)), dst)
    except httpx.TransportError as e:
        raise MasterUnreachableError(client.master, str(e) or type(e).__name__) from e


# ---- downloading: straight from the storage --------------------------------------------------


class DirectUnavailable(Exception):
    """The checkpoint storage cannot be read from this machine; the message says why."""


def storage_config(sess: Session, ckpt: dict[str, Any]) -> dict[str, Any]:
    """The experiment's ``checkpoint_storage``: from the checkpoint, else from the experiment."""
    training = ckpt.get("training") or {}
    storage = (training.get("experimentConfig") or {}).get("checkpoint_storage")
    if not storage and training.get("experimentId") is not None:
        answer = sess.client.get(f"/api/v1/experiments/{training['experimentId']}")
        storage = (answer.get("config") or {}).get("checkpoint_storage")
    if not storage:
        raise DirectUnavailable(
            "the experiment config sets no checkpoint_storage, so the master's own applies "
            "and only the master knows it"
        )
    result: dict[str, Any] = storage
    return result


def _reason(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def download_direct(storage: dict[str, Any], uuid: str, dst: pathlib.Path, *, probe: bool) -> None:
    """Copy the checkpoint from its storage into ``dst`` (which need not exist yet).

    Raises :class:`DirectUnavailable` when this machine cannot read the storage: no
    ``harness.storage``, a config it cannot use, a checkpoint it cannot find (a ``shared_fs``
    directory not mounted here), missing credentials. With ``probe`` (``auto`` mode) the
    checkpoint's file list is read first, so an unreachable store is found before any copying.
    """
    kind = storage.get("type", "unknown")
    try:
        from harness.storage import build_storage
    except ImportError as e:
        raise DirectUnavailable(
            f"reading checkpoint storage needs harness.storage, which cannot be imported ({e})"
        ) from None
    try:
        manager = build_storage(storage)
    except Exception as e:
        raise DirectUnavailable(f"its checkpoint_storage is unusable: {_reason(e)}") from None
    if probe:
        try:
            manager.files(uuid)
        except Exception as e:
            raise DirectUnavailable(f"cannot read {kind} storage from here: {_reason(e)}") from None
    try:
        manager.download(uuid, dst)
    except Exception as e:
        raise DirectUnavailable(f"reading {kind} storage failed: {_reason(e)}") from None
    dst.mkdir(parents=True, exist_ok=True)


# ---- downloading: the verb -----------------------------------------------------------------------


def _publish(staging: pathlib.Path, out: pathlib.Path) -> None:
    """Move a complete download from ``staging`` to ``out``."""
    if not out.exists():
        staging.rename(out)
        return
    if not out.is_dir():
        raise CliError(f"cannot download into {out}: it exists and is not a directory")
    shutil.copytree(staging, out, dirs_exist_ok=True)


def _size(ckpt: dict[str, Any]) -> int | None:
    """The checkpoint's bytes by its ``resources`` (file → size), None if it lists none."""
    sizes = [int(v) for v in (ckpt.get("resources") or {}).values() if str(v).isdigit()]
    return sum(sizes) or None


def _fetch(sess: Session, ckpt: dict[str, Any], mode: str, staging: pathlib.Path) -> None:
    uuid = ckpt["uuid"]
    if mode == "master":
        download_via_master(sess, uuid, staging, _size(ckpt))
        return
    try:
        download_direct(storage_config(sess, ckpt), uuid, staging, probe=mode == "auto")
    except DirectUnavailable as e:
        if mode == "direct":
            raise CliError(
                f"cannot download checkpoint {uuid} directly: {e}; try --mode master"
            ) from None
        print(
            f"Cannot download directly: {e}; downloading through the master",
            file=sys.stderr,
        )
        if staging.exists():
            shutil.rmtree(staging)
        download_via_master(sess, uuid, staging, _size(ckpt))


def download_checkpoint(
    sess: Session, ckpt: dict[str, Any], out: pathlib.Path, mode: str
) -> pathlib.Path:
    """Download ``ckpt`` into ``out`` (see the module docstring); returns ``out``."""
    state = ckpt.get("state")
    if state not in DOWNLOADABLE_STATES:
        raise CliError(
            "Only COMPLETED or PARTIALLY_DELETED checkpoints can be downloaded. "
            f"Checkpoint state: {state}"
        )
    if (out / METADATA_FILE).exists():
        print(
            f"{out} already holds a checkpoint ({METADATA_FILE}); not downloading it again",
            file=sys.stderr,
        )
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        staging = pathlib.Path(tmp) / "checkpoint"
        _fetch(sess, ckpt, mode, staging)
        _publish(staging, out)
    metadata_path = out / METADATA_FILE
    if not metadata_path.exists():
        with contextlib.suppress(OSError):
            metadata_path.write_text(json.dumps(ckpt.get("metadata") or {}, indent=2))
    return out


def safe_uuid(uuid: str) -> str:
    """A uuid from the master, checked before it names a local directory."""
    if not uuid or "/" in uuid or "\\" in uuid or uuid.startswith("."):
        raise CliError(
            f"the master named checkpoint {uuid!r}, which is not usable as a directory name; "
            "give one with -o"
        )
    return uuid


def download(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    ckpt = get_checkpoint(sess, args.uuid)
    if args.output_dir:
        out = pathlib.Path(args.output_dir)
    else:
        out = pathlib.Path("checkpoints", safe_uuid(str(ckpt.get("uuid") or "")))
    path = download_checkpoint(sess, ckpt, out, args.mode)
    if args.quiet:
        print(path)
    else:
        render_checkpoint(ckpt, path)


def delete_checkpoints(args: argparse.Namespace) -> None:
    """Determined's ``DELETE /api/v1/checkpoints``: the files go, the checkpoints stay listed
    as ``DELETED``."""
    from cli.experiment_edit import yes_or_no  # the same confirmation as deleting experiments

    if not args.yes and not yes_or_no(
        "Deleting checkpoints will result in deletion of all data associated\n"
        "with each checkpoint in the checkpoint storage. Do you still want to proceed?"
    ):
        print("Stopping deletion of checkpoints.")
        return
    sess = setup_session(args)
    uuids = [u.strip() for u in args.checkpoints_uuids.split(",") if u.strip()]
    sess.client.request("DELETE", "/api/v1/checkpoints", json_body={"checkpointUuids": uuids})
    print(f"Deletion of checkpoints {args.checkpoints_uuids} is in progress")


def add_download_options(p: argparse.ArgumentParser) -> None:
    """``-o``, ``-q`` and ``--mode`` of every verb that downloads a checkpoint."""
    p.add_argument(
        "-o",
        "--output-dir",
        default=None,
        help="Desired output directory for the checkpoint (default: checkpoints/<uuid>).",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="Only print the path to the checkpoint."
    )
    p.add_argument(
        "--mode",
        choices=DOWNLOAD_MODES,
        default="auto",
        help=(
            "Select different download modes: 'direct' to directly download from checkpoint "
            "storage; 'master' to download via the master; 'auto' to download directly when "
            "the storage is reachable from here and via the master otherwise."
        ),
    )


def register(nouns: SubParsers) -> None:
    _, verbs = add_group(nouns, "c|heckpoint", "manage checkpoints")

    p = add_verb(verbs, "download", download, "download checkpoint from persistent storage")
    p.add_argument("uuid", help="Download a checkpoint by specifying its UUID.")
    add_download_options(p)

    p = add_verb(verbs, "delete", delete_checkpoints, "delete checkpoints")
    p.add_argument("checkpoints_uuids", help="comma-separated list of checkpoints to delete")
    p.add_argument("--yes", action="store_true", help="automatically answer yes to prompts")

    p = add_verb(verbs, "describe", describe, "describe checkpoint")
    p.add_argument("uuid", help="checkpoint uuid to describe")
    p.add_argument("--json", action="store_true", help="print as JSON")
