"""``det experiment`` (alias ``e``): create, list, describe, follow and steer experiments.

Determined's verbs, flags, tables and messages over the REST calls of
``docs/design/experiments.md`` ("REST used by people"):

- ``create CONFIG [MODEL_DEF]`` validates the config here with the master's own models
  (:func:`harness.experiment_config.parse_experiment_config`) before logging in, so a typo fails
  at once with the field's path and nothing is sent; packs the model definition directory like
  ``det cmd run -c`` (``.detignore``, 96 MiB); then ``POST /api/v1/experiments`` with the config
  as YAML *text* (the user's own, comments and all, unless ``--config`` overrides changed it).
  With ``-f`` it waits for the first trial, streams its logs, and exits 1 if the experiment ends
  in ``ERROR``.
- ``list``, ``describe``, ``config``, ``logs``, ``list-trials``, ``list-checkpoints`` read;
  ``kill``, ``pause``, ``activate``, ``archive``, ``unarchive`` and ``label add|remove`` act;
  ``wait`` polls until the experiment ends and exits 0 only for ``COMPLETED``.

Our own notices ("Waiting for first trial to begin...", "Trial log stream ended ...") go to
stderr, as ``det cmd``'s do, so stdout carries the trial's output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import yaml

from cli import checkpoint as cli_checkpoint
from cli import render
from cli import task as cli_task
from cli import trial as cli_trial
from cli.cmd import CONFIG_HELP, parse_config_overrides
from cli.context import pack_context
from cli.errors import CliError
from cli.parser import add_group, add_output_args, add_verb
from cli.session import Session, setup_session
from harness.experiment_config import ConfigError, parse_experiment_config

if TYPE_CHECKING:
    from cli.parser import Handler, SubParsers

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
# Seconds between polls while waiting for the first trial, or for the end after following it.
POLL_SECONDS = 0.5
# After the first trial's log stream ends, how long to wait for the experiment to end too.
FOLLOW_END_WAIT_SECONDS = 30.0


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


# ---- create --------------------------------------------------------------------------------------


def load_config(config_file: TextIO, overrides: list[str]) -> str:
    """The config text to send, validated: the file as written, or re-dumped after overrides."""
    name = getattr(config_file, "name", "config")
    with config_file as f:
        text = f.read()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CliError(f"{name}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(loaded, dict):
        raise CliError(f"{name}: an experiment config must be a YAML mapping of fields")
    if overrides:
        loaded = parse_config_overrides(loaded, overrides)
        text = yaml.safe_dump(loaded, sort_keys=False)
    try:
        parse_experiment_config(loaded)
    except ConfigError as e:
        raise CliError(f"invalid experiment config {name}: {e}".replace("\n", " ")) from None
    return text


def pack_model_def(directory: str) -> list[Any]:
    """The model definition as ``v1File`` entries (``.detignore`` honoured, 96 MiB at most)."""
    try:
        return pack_context(directory)
    except CliError as e:
        if e.message.startswith("context "):
            message = "model definition " + e.message.removeprefix("context ")
            message = message.replace("; -c takes a directory", "; give the directory of your code")
            raise CliError(message) from None
        raise


def wait_for_first_trial(sess: Session, experiment_id: int) -> int | None:
    """The id of the experiment's first trial once there is one; None if it ended without."""
    print("Waiting for first trial to begin...", file=sys.stderr, flush=True)
    while True:
        trials = get_trials(sess, experiment_id)
        if trials:
            return int(trials[0]["id"])
        state = get_experiment(sess, experiment_id)["experiment"].get("state")
        if state in TERMINAL_STATES:
            return None
        time.sleep(POLL_SECONDS)


def _other_trials_running(sess: Session, experiment_id: int) -> bool:
    return any(t.get("state") not in TRIAL_TERMINAL_STATES for t in get_trials(sess, experiment_id))


def settle_state(sess: Session, experiment_id: int) -> str:
    """The experiment's state once the followed trial is over: its end state if it ends within
    :data:`FOLLOW_END_WAIT_SECONDS`, else its state as soon as other trials are seen running."""
    deadline = time.monotonic() + FOLLOW_END_WAIT_SECONDS
    while True:
        state = str(get_experiment(sess, experiment_id)["experiment"].get("state"))
        if state in TERMINAL_STATES or state in ERROR_STATES:
            return state
        if state in ("STATE_ACTIVE", "STATE_PAUSED") and _other_trials_running(sess, experiment_id):
            return state
        if time.monotonic() >= deadline:
            return state
        time.sleep(POLL_SECONDS)


def follow_first_trial(sess: Session, experiment_id: int) -> int:
    """Stream the first trial's logs; exit code 1 if the experiment ends in ``ERROR``."""
    trial_id = wait_for_first_trial(sess, experiment_id)
    if trial_id is not None:
        print(f"Following first trial with ID {trial_id}", file=sys.stderr, flush=True)
        cli_trial.show_trial_logs(sess, trial_id, follow=True)
    state = settle_state(sess, experiment_id)
    if state in ERROR_STATES:
        raise CliError(
            f"experiment {experiment_id} ended in {state_name(state)}; "
            f"see det experiment describe {experiment_id}"
        )
    if state not in TERMINAL_STATES:
        print(
            f"Experiment {experiment_id} is {state_name(state)}; wait for it to end with: "
            f"det experiment wait {experiment_id}",
            file=sys.stderr,
        )
    return 0


def create_experiment(args: argparse.Namespace) -> int:
    config_text = load_config(args.config_file, args.config)
    files = pack_model_def(args.model_def) if args.model_def is not None else []
    sess = setup_session(args)
    body: dict[str, Any] = {
        "config": config_text,
        "modelDefinition": files,
        "activate": not args.paused,
        "validateOnly": False,
    }
    if args.project_id is not None:
        body["projectId"] = args.project_id
    answer = sess.client.post("/api/v1/experiments", body)
    experiment_id = int(answer["experiment"]["id"])
    print(f"Created experiment {experiment_id}", flush=True)
    for warning in answer.get("warnings") or []:
        print(f"Warning: {warning}", file=sys.stderr)
    if args.follow_first_trial and not args.paused:
        return follow_first_trial(sess, experiment_id)
    return 0


# ---- read ----------------------------------------------------------------------------------------


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


# ---- act -----------------------------------------------------------------------------------------


def lifecycle(action: str, done: str) -> Handler:
    """A verb: POST ``/api/v1/experiments/{id}/<action>``, then print ``<done> experiment N``."""

    def run(args: argparse.Namespace) -> None:
        sess = setup_session(args)
        sess.client.post(f"/api/v1/experiments/{args.experiment_id}/{action}")
        print(f"{done} experiment {args.experiment_id}")

    return run


def _label_path(args: argparse.Namespace) -> str:
    return f"/api/v1/experiments/{args.experiment_id}/labels/{quote(args.label, safe='')}"


def add_label(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    sess.client.request("PUT", _label_path(args))
    print(f"Added label '{args.label}' to experiment {args.experiment_id}")


def remove_label(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    sess.client.delete(_label_path(args))
    print(f"Removed label '{args.label}' from experiment {args.experiment_id}")


def wait(args: argparse.Namespace) -> int:
    """Poll until the experiment ends: 0 for ``COMPLETED``, 1 for any other end (or paused)."""
    sess = setup_session(args)
    started = time.monotonic()
    minutes_shown = 0
    while True:
        state = get_experiment(sess, args.experiment_id)["experiment"].get("state")
        if state in TERMINAL_STATES:
            break
        if state == "STATE_PAUSED":
            raise CliError(
                f"Experiment {args.experiment_id} is in paused state. "
                "Make sure the experiment is active."
            )
        time.sleep(args.polling_interval)
        minutes = int((time.monotonic() - started) // 60)
        if minutes > minutes_shown:
            minutes_shown = minutes
            print(
                f"Waiting for Experiment {args.experiment_id} to complete. "
                f"Elapsed {minutes} minutes",
                file=sys.stderr,
            )
    if state != "STATE_COMPLETED":
        print(f"Experiment {args.experiment_id} ended in {state_name(state)}", file=sys.stderr)
        return 1
    return 0


# ---- the parser ------------------------------------------------------------------------------


def positive_int(value: str) -> int:
    """argparse ``type`` for counts such as ``--best N``."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _experiment_id(parser: argparse.ArgumentParser, help_text: str = "experiment ID") -> None:
    parser.add_argument("experiment_id", type=int, help=help_text)


def _pagination(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=int, default=PAGE_LIMIT, help="Maximum items per page of results"
    )
    parser.add_argument(
        "--offset", type=int, default=0, help="Number of items to skip before starting"
    )
    parser.add_argument(
        "--pages",
        choices=["all", "1"],
        default="all",
        help="when set to 'all', fetch all available data; when '1', fetch a single page",
    )


LIFECYCLE_VERBS: list[tuple[str, str, str, str]] = [
    # (verb spec, REST action, message word, help)
    ("activate unpause", "activate", "Activated", "activate experiment, i.e., unpause it"),
    ("pause", "pause", "Paused", "pause experiment"),
    ("kill", "kill", "Killed", "kill experiment"),
    ("archive", "archive", "Archived", "archive experiment"),
    ("unarchive", "unarchive", "Unarchived", "unarchive experiment"),
]


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "e|xperiment", "manage experiments")

    p = add_verb(verbs, "list ls", list_experiments, "list experiments", default_for=noun)
    p.add_argument(
        "--all",
        "-a",
        action="store_true",
        help="show all experiments (including archived and other users')",
    )
    _pagination(p)
    add_output_args(p)

    p = add_verb(verbs, "create", create_experiment, "create experiment")
    p.add_argument(
        "config_file", type=argparse.FileType("r"), help="experiment config file (.yaml)"
    )
    p.add_argument(
        "model_def",
        nargs="?",
        default=None,
        help="directory containing the model definition (honours .detignore)",
    )
    p.add_argument(
        "--project",
        "--project-id",
        "--project_id",
        dest="project_id",
        type=int,
        default=None,
        help="place this experiment inside this project",
    )
    p.add_argument("--config", action="append", default=[], help=CONFIG_HELP)
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-f",
        "--follow-first-trial",
        action="store_true",
        help="follow the logs of the first trial that is created",
    )
    group.add_argument("--paused", action="store_true", help="do not activate the experiment")

    p = add_verb(verbs, "describe", describe, "describe experiment")
    p.add_argument("experiment_ids", help="comma-separated list of experiment IDs to describe")
    add_output_args(p)

    p = add_verb(verbs, "config", show_config, "display experiment config")
    _experiment_id(p)

    p = add_verb(verbs, "logs", experiment_logs, "fetch logs of the first trial of an experiment")
    _experiment_id(p)
    cli_task.add_log_args(p)

    p = add_verb(verbs, "list-trials lt", list_trials, "list trials of experiment")
    _experiment_id(p)
    _pagination(p)
    add_output_args(p)

    p = add_verb(
        verbs,
        "list-checkpoints lc",
        cli_checkpoint.list_checkpoints,
        "list checkpoints of experiment",
    )
    _experiment_id(p)
    p.add_argument(
        "--best",
        type=positive_int,
        metavar="N",
        help="Return the best N checkpoints for this experiment. If this flag is used, only "
        "checkpoints with an associated validation metric will be considered.",
    )
    add_output_args(p)

    for spec, action, done, help_text in LIFECYCLE_VERBS:
        p = add_verb(verbs, spec, lifecycle(action, done), help_text)
        _experiment_id(p, f"experiment ID to {action}")

    p = add_verb(verbs, "wait", wait, "wait for experiment to reach terminal state")
    _experiment_id(p)
    p.add_argument(
        "--polling-interval",
        type=float,
        default=5,
        help="the interval (in seconds) to poll for updated state",
    )

    _, label_verbs = add_group(verbs, "label", "manage experiment labels")
    for spec, func, help_text in (
        ("add", add_label, "add label"),
        ("remove", remove_label, "remove label"),
    ):
        p = add_verb(label_verbs, spec, func, help_text)
        _experiment_id(p)
        p.add_argument("label", help="label")
