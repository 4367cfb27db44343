"""``det trial`` (alias ``t``): describe a trial, print or follow its logs, kill it.

Paths and shapes are Determined's (``docs/design/experiments.md``, "REST used by people"):
``GET /api/v1/trials/{id}`` answers ``{"trial": trialv1Trial}``, ``GET …/logs`` streams ndjson
entries like task logs (the master ends a ``follow=true`` stream once the trial has ended and
every line was sent), ``POST …/kill`` kills it.

``describe`` prints Determined's two tables: the trial, then its *workloads* (one row per
training, validation or checkpoint report). The workloads come from Determined's
``GET /api/v1/trials/{id}/workloads``; a master without that endpoint (it is not in our contract)
answers 404, and then the rows are built from what the contract has: the trial's checkpoints
(each with the validation metrics it was saved with) and its latest and best validations.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from cli import render
from cli import task as cli_task
from cli.errors import CliError
from cli.parser import add_group, add_output_args, add_verb
from cli.session import Session, setup_session
from harness.client import NotFoundError

if TYPE_CHECKING:
    from cli.parser import SubParsers

TRIAL_HEADERS = ["Experiment ID", "State", "H-Params", "Summary Metrics", "Started", "Ended"]
WORKLOAD_HEADERS = [
    "# of Batches",
    "Report Time",
    "Checkpoint",
    "Checkpoint UUID",
    "Checkpoint Metadata",
    "Validation Metrics",
]
WORKLOADS_PAGE_LIMIT = 1000
# Checkpoint states whose files exist (Determined shows a UUID only for these).
STORED_CHECKPOINT_STATES = {"STATE_COMPLETED", "STATE_DELETED", "STATE_PARTIALLY_DELETED"}


def state_name(value: Any) -> Any:
    """``STATE_COMPLETED`` → ``COMPLETED``, as Determined's tables show enum values."""
    return render.strip_prefix(value, "STATE_") if isinstance(value, str) else value


def pretty_json(value: Any) -> str | None:
    """A JSON cell the way Determined prints one (four-space indent); ``None`` stays empty."""
    return None if value is None else json.dumps(value, indent=4)


def get_trial(sess: Session, trial_id: int) -> dict[str, Any]:
    """``GET /api/v1/trials/{id}``'s whole answer (``{"trial": …}``)."""
    answer: dict[str, Any] = sess.client.get(f"/api/v1/trials/{trial_id}")
    return answer


# ---- workloads -----------------------------------------------------------------------------------


def fetch_workloads(
    sess: Session, trial: dict[str, Any], *, batch_metrics: bool
) -> list[dict[str, Any]]:
    """The trial's workload containers, oldest first (see the module docstring for the source)."""
    trial_id = trial["id"]
    workloads: list[dict[str, Any]] = []
    offset = 0
    try:
        while True:
            params = {
                "offset": offset,
                "limit": WORKLOADS_PAGE_LIMIT,
                "includeBatchMetrics": batch_metrics,
            }
            page = sess.client.get(f"/api/v1/trials/{trial_id}/workloads", params)
            batch = page.get("workloads") or []
            workloads.extend(batch)
            offset += len(batch)
            total = (page.get("pagination") or {}).get("total")
            if not batch or total is None or offset >= int(total):
                return workloads
    except NotFoundError:
        return workloads_from_checkpoints(sess, trial)


def _checkpoint_workload(ckpt: dict[str, Any]) -> dict[str, Any]:
    metadata = ckpt.get("metadata") or {}
    return {
        "uuid": ckpt.get("uuid"),
        "state": ckpt.get("state"),
        "totalBatches": metadata.get("steps_completed"),
        "endTime": ckpt.get("reportTime"),
        "metadata": metadata,
        "resources": ckpt.get("resources"),
    }


def workloads_from_checkpoints(sess: Session, trial: dict[str, Any]) -> list[dict[str, Any]]:
    """Workload rows from the contract's endpoints: one per checkpoint (with its validation),
    plus the trial's latest and best validations where no checkpoint was saved with them."""
    answer = sess.client.get(f"/api/v1/trials/{trial['id']}/checkpoints")
    rows: list[dict[str, Any]] = []
    seen_validations: set[Any] = set()
    for ckpt in answer.get("checkpoints") or []:
        workload = _checkpoint_workload(ckpt)
        container: dict[str, Any] = {"checkpoint": workload}
        validation = (ckpt.get("training") or {}).get("validationMetrics")
        if validation:
            container["validation"] = {
                "metrics": validation,
                "totalBatches": workload["totalBatches"],
                "endTime": workload["endTime"],
            }
            seen_validations.add(workload["totalBatches"])
        rows.append(container)
    for key in ("latestValidation", "bestValidation"):
        validation = trial.get(key)
        if validation and validation.get("totalBatches") not in seen_validations:
            rows.append({"validation": validation})
            seen_validations.add(validation.get("totalBatches"))
    rows.sort(key=lambda c: _unpack(c).get("totalBatches") or 0)
    return rows


def _unpack(container: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = (
        container.get("training") or container.get("validation") or container.get("checkpoint")
    ) or {}
    return found


def _checkpoint_cells(ckpt: dict[str, Any] | None) -> list[Any]:
    if not ckpt:
        return [None, None, None]
    state = ckpt.get("state")
    uuid = ckpt.get("uuid") if state in STORED_CHECKPOINT_STATES else None
    return [state_name(state), uuid, pretty_json(ckpt.get("metadata"))]


def workload_rows(
    workloads: Iterable[dict[str, Any]], *, metrics: bool
) -> tuple[list[str], list[list[Any]]]:
    """Determined's ``Workloads:`` table; ``metrics`` adds the training metrics column."""
    headers = WORKLOAD_HEADERS + (["Workload Metrics"] if metrics else [])
    rows = []
    for container in workloads:
        unpacked = _unpack(container)
        validation = container.get("validation")
        row = [
            unpacked.get("totalBatches"),
            render.format_time(unpacked.get("endTime")),
            *_checkpoint_cells(container.get("checkpoint")),
            pretty_json(validation.get("metrics")) if validation else None,
        ]
        if metrics:
            training = container.get("training")
            row.append(pretty_json(training.get("metrics")) if training else None)
        rows.append(row)
    return headers, rows


# ---- verbs ---------------------------------------------------------------------------------------


def describe_trial(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    answer = get_trial(sess, args.trial_id)
    trial = answer["trial"]
    workloads = fetch_workloads(sess, trial, batch_metrics=args.metrics)
    if args.json:
        render.print_json({**answer, "workloads": workloads})
        return
    row = [
        trial.get("experimentId"),
        state_name(trial.get("state")),
        pretty_json(trial.get("hparams")),
        pretty_json(trial.get("summaryMetrics")),
        render.format_time(trial.get("startTime")),
        render.format_time(trial.get("endTime")),
    ]
    render.print_table(TRIAL_HEADERS, [row], as_csv=args.csv)
    headers, rows = workload_rows(workloads, metrics=args.metrics)
    print()
    print("Workloads:")
    render.print_table(headers, rows, as_csv=args.csv)
    if args.metrics_summary:
        render.print_json(trial.get("summaryMetrics"))


def trial_logs(
    sess: Session,
    trial_id: int,
    *,
    follow: bool = False,
    head: int | None = None,
    tail: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Log entries of one trial (every run), oldest first; ``tail`` keeps the last N."""
    path = f"/api/v1/trials/{trial_id}/logs"
    return cli_task.stream_logs(sess, path, follow=follow, head=head, tail=tail)


def stream_ended_notice(trial_id: int) -> None:
    print(
        f"Trial log stream ended. To reopen log stream, run: det trial logs -f {trial_id}",
        file=sys.stderr,
    )


def show_trial_logs(
    sess: Session,
    trial_id: int,
    *,
    follow: bool = False,
    head: int | None = None,
    tail: int | None = None,
    as_json: bool = False,
) -> None:
    """Print a trial's logs (see ``cli.task.print_logs`` for which lines go to stderr), then
    say how to reopen the stream, also after Ctrl-C."""
    if sum((follow, head is not None, tail is not None)) > 1:
        raise CliError("at most one of --follow, --head and --tail may be given")
    try:
        entries = trial_logs(sess, trial_id, follow=follow, head=head, tail=tail)
        cli_task.print_logs(entries, as_json=as_json)
    except KeyboardInterrupt:
        stream_ended_notice(trial_id)
        raise
    stream_ended_notice(trial_id)


def logs(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    show_trial_logs(
        sess, args.trial_id, follow=args.follow, head=args.head, tail=args.tail, as_json=args.json
    )


def kill_trial(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    sess.client.post(f"/api/v1/trials/{args.trial_id}/kill")
    print("Killed trial", args.trial_id)


def register(nouns: SubParsers) -> None:
    _, verbs = add_group(nouns, "t|rial", "manage trials")

    p = add_verb(verbs, "describe", describe_trial, "describe trial")
    p.add_argument("trial_id", type=int, help="trial ID")
    p.add_argument("--metrics-summary", action="store_true", help="display summary of metrics")
    p.add_argument(
        "--metrics", action="store_true", help="display full metrics, such as batch metrics"
    )
    add_output_args(p)

    p = add_verb(verbs, "logs", logs, "fetch trial logs")
    p.add_argument("trial_id", type=int, help="trial ID")
    cli_task.add_log_args(p)

    p = add_verb(verbs, "kill", kill_trial, "forcibly terminate a trial")
    p.add_argument("trial_id", type=int, help="trial ID")
