"""``det experiment`` verbs that only read: ``list``, ``describe``, ``config``, ``logs``,
``list-trials`` (``list-checkpoints`` is ``cli.checkpoint``'s).

Determined's tables, columns and flags over ``GET /api/v1/experiments[/{id}[/trials]]``
(``docs/design/experiments.md``, "REST used by people"). The reading helpers the other verbs
share live here too, with the state names they test against: :func:`get_experiment`,
:func:`get_trials`, :func:`read_paginated` (every page of a Determined list) and
:func:`state_name` (``STATE_ACTIVE`` shown as ``ACTIVE``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli import render
from cli import trial as cli_trial
from cli.errors import CliError
from cli.session import Session, setup_session

LIST_HEADERS = [
    "ID",
    "Owner",
    "Name",
    "Parent ID",
    "State",
    "Progress",
    "Started",
    "Ended",
    "Resource Pool",
]
DESCRIBE_HEADERS = [
    "Experiment ID",
    "State",
    "Progress",
    "Started",
    "Ended",
    "Name",
    "Description",
    "Archived",
    "Resource Pool",
    "Labels",
]
DESCRIBE_TRIAL_HEADERS = ["Trial ID", "Experiment ID", "State", "Started", "Ended", "H-Params"]
BEST_HEADERS = ["Experiment ID", "Trial ID", "Searcher Metric", "Value", "Best Checkpoint"]
LIST_TRIAL_HEADERS = ["Trial ID", "State", "H-Params", "Started", "Ended", "# of Batches"]
TERMINAL_STATES = {"STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR", "STATE_DELETED"}
TRIAL_TERMINAL_STATES = {"STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR"}
ERROR_STATES = {"STATE_ERROR", "STATE_STOPPING_ERROR"}
PAGE_LIMIT = 200


def state_name(value: Any) -> Any:
    return render.strip_prefix(value, "STATE_") if isinstance(value, str) else value


def format_percent(value: float | None) -> str | None:
    """``0.5`` → ``50.0%``, as Determined's ``render.format_percent``."""
    return None if value is None else f"{value:.1%}"


def read_paginated(
    sess: Session,
    path: str,
    key: str,
    params: dict[str, Any] | None = None,
    *,
    offset: int = 0,
    limit: int = PAGE_LIMIT,
    all_pages: bool = True,
) -> list[dict[str, Any]]:
    """Every item under ``key`` of a paginated list (``{key: [...], pagination: {...}}``)."""
    items: list[dict[str, Any]] = []
    while True:
        page = sess.client.get(path, {**(params or {}), "offset": offset, "limit": limit})
        batch = page.get(key) or []
        items.extend(batch)
        pagination = page.get("pagination") or {}
        end = int(pagination.get("endIndex") or offset + len(batch))
        total = pagination.get("total")
        if not all_pages or not batch or total is None or end >= int(total) or end <= offset:
            return items
        offset = end


def get_experiment(sess: Session, experiment_id: int) -> dict[str, Any]:
    """``GET /api/v1/experiments/{id}``: ``{experiment, config, jobSummary}``."""
    answer: dict[str, Any] = sess.client.get(f"/api/v1/experiments/{experiment_id}")
    return answer


def get_trials(sess: Session, experiment_id: int) -> list[dict[str, Any]]:
    trials = read_paginated(sess, f"/api/v1/experiments/{experiment_id}/trials", "trials")
    return sorted(trials, key=lambda t: t.get("id") or 0)


def list_experiments(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    params: dict[str, Any] = {} if args.all else {"archived": False, "users": [sess.username]}
    experiments = read_paginated(
        sess,
        "/api/v1/experiments",
        "experiments",
        params,
        offset=args.offset,
        limit=args.limit,
        all_pages=args.pages == "all",
    )
    if not args.all:
        experiments = [
            e
            for e in experiments
            if not e.get("archived") and e.get("username") in (None, sess.username)
        ]
    if args.json:
        render.print_json(experiments)
        return
    headers = LIST_HEADERS + (["Archived"] if args.all else [])
    rows = []
    for e in experiments:
        row = [
            e.get("id"),
            e.get("username"),
            e.get("name"),
            e.get("forkedFrom"),
            state_name(e.get("state")),
            format_percent(e.get("progress")),
            render.format_time(e.get("startTime")),
            render.format_time(e.get("endTime")),
            e.get("resourcePool"),
        ]
        if args.all:
            row.append(e.get("archived"))
        rows.append(row)
    render.print_table(headers, rows, as_csv=args.csv)


def parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(
            f"invalid experiment IDs {text!r}: give an ID or comma-separated IDs, e.g. 3,7"
        ) from None


def _metric_value(trial: dict[str, Any], metric: str) -> float | None:
    value = trial.get("searcherMetricValue")
    if value is None:
        best = (trial.get("bestValidation") or {}).get("metrics") or {}
        value = (best.get("avgMetrics") or {}).get(metric)
    return value if isinstance(value, int | float) else None


def best_validation(answer: dict[str, Any], trials: list[dict[str, Any]]) -> list[Any] | None:
    """``[experiment id, trial id, metric, value, checkpoint]`` of the best trial, if any."""
    exp = answer["experiment"]
    searcher = (answer.get("config") or exp.get("config") or {}).get("searcher") or {}
    metric = str(exp.get("searcherMetric") or searcher.get("metric") or "")
    by_id = {t.get("id"): t for t in trials}
    best_id, value = exp.get("bestTrialId"), exp.get("bestTrialSearcherMetric")
    if best_id is None or value is None:
        scored = [(v, t["id"]) for t in trials if (v := _metric_value(t, metric)) is not None]
        if not scored:
            return None
        pick = min if searcher.get("smaller_is_better", True) else max
        value, best_id = pick(scored)
    checkpoint = (by_id.get(best_id, {}).get("bestCheckpoint") or {}).get("uuid")
    return [exp.get("id"), best_id, metric, value, checkpoint]


def describe(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    answers = [get_experiment(sess, i) for i in parse_ids(args.experiment_ids)]
    if args.json:
        render.print_json(answers)
        return
    rows = []
    for answer in answers:
        e = answer["experiment"]
        rows.append(
            [
                e.get("id"),
                state_name(e.get("state")),
                format_percent(e.get("progress")),
                render.format_time(e.get("startTime")),
                render.format_time(e.get("endTime")),
                e.get("name"),
                e.get("description"),
                e.get("archived"),
                e.get("resourcePool"),
                ", ".join(sorted(e.get("labels") or [])),
            ]
        )
    print("Experiment:")
    render.print_table(DESCRIBE_HEADERS, rows, as_csv=args.csv)

    trials = {a["experiment"]["id"]: get_trials(sess, a["experiment"]["id"]) for a in answers}
    trial_rows = [
        [
            t.get("id"),
            exp_id,
            state_name(t.get("state")),
            render.format_time(t.get("startTime")),
            render.format_time(t.get("endTime")),
            json.dumps(t.get("hparams"), indent=4),
        ]
        for exp_id, exp_trials in trials.items()
        for t in exp_trials
    ]
    print("\nTrials:")
    render.print_table(DESCRIBE_TRIAL_HEADERS, trial_rows, as_csv=args.csv)

    best_rows = [
        row
        for a in answers
        if (row := best_validation(a, trials[a["experiment"]["id"]])) is not None
    ]
    print("\nBest validation:")
    render.print_table(BEST_HEADERS, best_rows, as_csv=args.csv)


def show_config(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    answer = get_experiment(sess, args.experiment_id)
    render.print_yaml(answer.get("config") or answer["experiment"].get("config") or {})


def experiment_logs(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    trials = get_trials(sess, args.experiment_id)
    if not trials:
        raise CliError(f"experiment {args.experiment_id} has no trials yet")
    cli_trial.show_trial_logs(
        sess,
        int(trials[0]["id"]),
        follow=args.follow,
        head=args.head,
        tail=args.tail,
        as_json=args.json,
    )


def list_trials(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    trials = read_paginated(
        sess,
        f"/api/v1/experiments/{args.experiment_id}/trials",
        "trials",
        offset=args.offset,
        limit=args.limit,
        all_pages=args.pages == "all",
    )
    if args.json:
        render.print_json(trials)
        return
    rows = [
        [
            t.get("id"),
            state_name(t.get("state")),
            json.dumps(t.get("hparams"), indent=4),
            render.format_time(t.get("startTime")),
            render.format_time(t.get("endTime")),
            t.get("totalBatchesProcessed"),
        ]
        for t in trials
    ]
    render.print_table(LIST_TRIAL_HEADERS, rows, as_csv=args.csv)
