"""``det experiment`` (alias ``e``): create, list, describe, follow and steer experiments.

Determined's verbs, flags, tables and messages over the REST calls of
``docs/design/experiments.md`` ("REST used by people"). This module is the noun: its parser
(:func:`register`) and the verbs that act, the rest living by what they do:

- ``create`` (config checks, model definition packing, ``-f`` following the first trial):
  ``cli.experiment_create``;
- ``list``, ``describe``, ``config``, ``logs``, ``list-trials`` read, with their tables:
  ``cli.experiment_read``; ``list-checkpoints`` is ``cli.checkpoint``'s;
- here: ``kill``, ``pause``, ``activate``, ``archive``, ``unarchive`` and ``label add|remove``
  act; ``wait`` polls until the experiment ends and exits 0 only for ``COMPLETED``.

``wait``'s notices (minutes elapsed, an end other than ``COMPLETED``) go to stderr, so stdout
carries only each verb's one-line answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from cli import checkpoint as cli_checkpoint
from cli import experiment_edit, progress
from cli import task as cli_task
from cli.cmd import CONFIG_HELP
from cli.errors import CliError
from cli.experiment_create import create_experiment
from cli.experiment_read import (
    PAGE_LIMIT,
    TERMINAL_STATES,
    describe,
    experiment_logs,
    get_experiment,
    list_experiments,
    list_trials,
    show_config,
    state_name,
)
from cli.parser import add_group, add_output_args, add_verb
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import Handler, SubParsers


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
    # On a terminal, a bar of the experiment's progress; otherwise the minute lines only.
    with progress.waiting(f"Experiment {args.experiment_id}", total=1.0) as bar:
        while True:
            experiment = get_experiment(sess, args.experiment_id)["experiment"]
            state = experiment.get("state")
            bar.update(completed=float(experiment.get("progress") or 0.0))
            if state in TERMINAL_STATES:
                break
            if state == "STATE_PAUSED":
                raise CliError(
                    f"Experiment {args.experiment_id} is in paused state. "
                    "Make sure the experiment is active."
                )
            time.sleep(args.polling_interval)
            minutes = int((time.monotonic() - started) // 60)
            if minutes > minutes_shown and not progress.drawn():
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
        "config_file",
        type=argparse.FileType("r", encoding="utf-8"),
        help="experiment config file (.yaml)",
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

    experiment_edit.register(verbs)
