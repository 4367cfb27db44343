"""``det experiment create CONFIG [MODEL_DEF]``: check, pack, submit, and maybe follow.

The one verb with real work on the client, so it lives apart from the reading verbs:

- the config is validated here with the master's own models
  (:func:`harness.experiment_config.parse_experiment_config`) before logging in, so a typo fails
  at once with the field's path and nothing is sent; it is sent as YAML *text* (the user's own,
  comments and all, unless ``--config`` overrides changed it);
- the model definition directory is packed like ``det cmd run -c`` (``.detignore``, 96 MiB);
- with ``-f`` it waits for the first trial, streams its logs, and exits 1 if the experiment ends
  in ``ERROR``.

Our own notices ("Waiting for first trial to begin...") go to stderr, as ``det cmd``'s do, so
stdout carries the trial's output.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import yaml

from cli import progress
from cli import trial as cli_trial
from cli.cmd import parse_config_overrides
from cli.config_file import read_yaml
from cli.context import pack_context
from cli.errors import CliError
from cli.experiment_read import (
    ERROR_STATES,
    TERMINAL_STATES,
    TRIAL_TERMINAL_STATES,
    get_experiment,
    get_trials,
    state_name,
)
from cli.session import Session, setup_session
from harness.experiment_config import ConfigError, parse_experiment_config
from harness.experiment_config_determined import ineffective_fields

# Seconds between polls while waiting for the first trial, or for the end after following it.
POLL_SECONDS = 0.5
# After the first trial's log stream ends, how long to wait for the experiment to end too.
FOLLOW_END_WAIT_SECONDS = 30.0


def load_config(config_file: TextIO, overrides: list[str]) -> str:
    """The config text to send, validated: the file as written, or re-dumped after overrides."""
    name = getattr(config_file, "name", "config")
    text, loaded = read_yaml(config_file)
    if not isinstance(loaded, dict):
        raise CliError(f"{name}: an experiment config must be a YAML mapping of fields")
    if overrides:
        loaded = parse_config_overrides(loaded, overrides)
        text = yaml.safe_dump(loaded, sort_keys=False)
    try:
        parsed = parse_experiment_config(loaded)
    except ConfigError as e:
        raise CliError(f"invalid experiment config {name}: {e}".replace("\n", " ")) from None
    for warning in ineffective_fields(parsed):
        print(f"Warning: {name}: {warning}", file=sys.stderr)
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
    print("Waiting for first trial to begin...", flush=True)
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
        print(f"Following first trial with ID {trial_id}", flush=True)
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
    answer = progress.post(sess.client, "/api/v1/experiments", body, "Uploading model definition")
    experiment_id = int(answer["experiment"]["id"])
    print(f"Created experiment {experiment_id}", flush=True)
    for warning in answer.get("warnings") or []:
        print(f"Warning: {warning}", file=sys.stderr)
    if args.follow_first_trial and not args.paused:
        return follow_first_trial(sess, experiment_id)
    return 0
