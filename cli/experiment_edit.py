"""``det experiment set …|delete|download|continue|move``: Determined's verbs and messages.

``set`` sends Determined's ``PATCH /api/v1/experiments/{id}`` bodies (``v1PatchExperiment``);
``delete`` and ``set gc-policy`` ask before doing something that cannot be undone, unless
``--yes`` (without a terminal to ask on, they refuse and say to pass ``--yes``); ``download``
fetches the best checkpoints (by the searcher metric, or ``--sort-by``) through
``det checkpoint download``'s machinery; ``continue`` sends ``--config-file`` and ``--config``
overrides as ``overrideConfig`` YAML for the master to merge into the experiment's config.
"""

from __future__ import annotations

import argparse
import pathlib
import pprint
import sys
from typing import TYPE_CHECKING, Any

import yaml

from cli import checkpoint as cli_checkpoint
from cli.cmd import CONFIG_HELP, parse_config_overrides
from cli.config_file import read_yaml
from cli.errors import CliError
from cli.experiment_create import follow_first_trial
from cli.parser import add_group, add_verb, string_to_bool
from cli.session import setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers


def yes_or_no(prompt: str, flag: str = "--yes") -> bool:
    """Ask on the terminal; without one, refuse rather than guess."""
    if not sys.stdin.isatty():
        raise CliError(f"this cannot be undone and there is no terminal to confirm on; pass {flag}")
    answer = input(f"{prompt} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _patch(args: argparse.Namespace, body: dict[str, Any]) -> None:
    sess = setup_session(args)
    sess.client.patch(
        f"/api/v1/experiments/{args.experiment_id}", {"id": args.experiment_id, **body}
    )


def set_description(args: argparse.Namespace) -> None:
    _patch(args, {"description": args.description})
    print(f"Set description of experiment {args.experiment_id} to '{args.description}'")


def set_name(args: argparse.Namespace) -> None:
    _patch(args, {"name": args.name})
    print(f"Set name of experiment {args.experiment_id} to '{args.name}'")


def set_max_slots(args: argparse.Namespace) -> None:
    _patch(args, {"resources": {"maxSlots": args.max_slots}})
    print(f"Set `max_slots` of experiment {args.experiment_id} to {args.max_slots}")


def set_weight(args: argparse.Namespace) -> None:
    _patch(args, {"resources": {"weight": args.weight}})
    print(f"Set `weight` of experiment {args.experiment_id} to {args.weight}")


def set_priority(args: argparse.Namespace) -> None:
    _patch(args, {"resources": {"priority": args.priority}})
    print(f"Set `priority` of experiment {args.experiment_id} to {args.priority}")


def set_gc_policy(args: argparse.Namespace) -> None:
    policy = {
        "save_experiment_best": args.save_experiment_best,
        "save_trial_best": args.save_trial_best,
        "save_trial_latest": args.save_trial_latest,
    }
    if not args.yes and not yes_or_no(
        "Changing the checkpoint garbage collection policy of an experiment may result\n"
        "in the unrecoverable deletion of checkpoints.  Do you wish to proceed?"
    ):
        print("Aborting operations.")
        return
    storage = {
        "saveExperimentBest": args.save_experiment_best,
        "saveTrialBest": args.save_trial_best,
        "saveTrialLatest": args.save_trial_latest,
    }
    _patch(args, {"checkpointStorage": storage})
    print(f"Set GC policy of experiment {args.experiment_id} to\n{pprint.pformat(policy)}")


def delete_experiment(args: argparse.Namespace) -> None:
    if not args.yes and not yes_or_no(
        "Deleting an experiment will result in the unrecoverable \n"
        "deletion of all associated logs, checkpoints, and other \n"
        "metadata associated with the experiment. For a recoverable \n"
        "alternative, see the 'det archive' command. Do you still \n"
        "wish to proceed?"
    ):
        print("Aborting experiment deletion.")
        return
    sess = setup_session(args)
    sess.client.delete(f"/api/v1/experiments/{args.experiment_id}")
    print(f"Deletion of experiment {args.experiment_id} is in progress")


def move_experiment(args: argparse.Namespace) -> None:
    """Determined names the destination by workspace and project; here there is one of each."""
    sess = setup_session(args)
    if (args.workspace_name, args.project_name) != ("Uncategorized", "Uncategorized"):
        raise CliError(
            f"project '{args.project_name}' in workspace '{args.workspace_name}' does not "
            "exist: there is one workspace and one project here, Uncategorized, which holds "
            "every experiment"
        )
    body = {"destinationProjectId": 1, "experimentId": args.experiment_id}
    sess.client.post(f"/api/v1/experiments/{args.experiment_id}/move", body)
    print(f'Moved experiment {args.experiment_id} to project "{args.project_name}"')


def download(args: argparse.Namespace) -> None:
    """The best ``--top-n`` checkpoints into ``<output_dir>/<uuid>``."""
    if (args.sort_by is None) != (args.smaller_is_better is None):
        raise CliError("--sort-by and --smaller-is-better must be given together")
    sess = setup_session(args)
    answer = sess.client.get(f"/api/v1/experiments/{args.experiment_id}/checkpoints")
    checkpoints: list[dict[str, Any]] = answer.get("checkpoints") or []
    if args.sort_by is None:
        metric, smaller = cli_checkpoint.searcher_settings(sess, args.experiment_id, checkpoints)
    else:
        metric, smaller = args.sort_by, bool(args.smaller_is_better)
    completed = [c for c in checkpoints if c.get("state") == "STATE_COMPLETED"]
    best = cli_checkpoint.best_checkpoints(completed, metric, smaller, args.top_n)
    if not best:
        raise CliError(
            f"experiment {args.experiment_id} has no completed checkpoint with a value of "
            f"'{metric}' to choose by"
        )
    top = pathlib.Path(args.output_dir)
    top.mkdir(parents=True, exist_ok=True)
    for ckpt in best:
        uuid = cli_checkpoint.safe_uuid(str(ckpt.get("uuid") or ""))
        path = cli_checkpoint.download_checkpoint(sess, ckpt, top / uuid, args.mode)
        if args.quiet:
            print(path)
        else:
            cli_checkpoint.render_checkpoint(ckpt, path)
            print()


def continue_experiment(args: argparse.Namespace) -> int:
    """Determined's ``det experiment continue``: the overrides go as YAML, merged by the
    master into the experiment's config."""
    config: dict[str, Any] = {}
    if args.config_file is not None:
        name = getattr(args.config_file, "name", "config")
        _, loaded = read_yaml(args.config_file)
        if not isinstance(loaded, dict):
            raise CliError(f"{name}: an experiment config must be a YAML mapping of fields")
        config = loaded
    config = parse_config_overrides(config, args.config)
    sess = setup_session(args)
    body = {"id": args.experiment_id, "overrideConfig": yaml.safe_dump(config, sort_keys=False)}
    sess.client.post("/api/v1/experiments/continue", body)
    print(f"Continued experiment {args.experiment_id}", flush=True)
    if args.follow_first_trial:
        return follow_first_trial(sess, args.experiment_id)
    return 0


def _experiment_id(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("experiment_id", type=int, help=help_text)


def _none_or_int(value: str) -> int | None:
    return None if value.strip().lower() in ("null", "none") else int(value)


def register(verbs: SubParsers) -> None:
    """Add these verbs to ``det experiment``'s."""
    p = add_verb(verbs, "delete", delete_experiment, "delete experiment")
    _experiment_id(p, "experiment ID to delete")
    p.add_argument("--yes", action="store_true", help="automatically answer yes to prompts")

    p = add_verb(verbs, "download", download, "download checkpoints for an experiment")
    _experiment_id(p, "experiment ID to download")
    p.add_argument("-o", "--output-dir", default="checkpoints", help="top-level directory")
    p.add_argument("--top-n", type=int, default=1, help="how many of the best checkpoints")
    p.add_argument("--sort-by", default=None, help="validation metric to sort on")
    p.add_argument(
        "--smaller-is-better",
        type=string_to_bool,
        default=None,
        help="sort order for --sort-by (true or false)",
    )
    p.add_argument(
        "--mode",
        choices=["auto", "direct", "master"],
        default="auto",
        help="straight from the checkpoint storage, or through the master",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only print the paths")

    p = add_verb(
        verbs,
        "continue",
        continue_experiment,
        "resume or recover training for a single-searcher experiment",
    )
    _experiment_id(p, "experiment ID to continue")
    p.add_argument("--config-file", type=argparse.FileType("r"), help="experiment config (.yaml)")
    p.add_argument("--config", action="append", default=[], help=CONFIG_HELP)
    p.add_argument(
        "-f",
        "--follow-first-trial",
        action="store_true",
        help="follow logs of the trial that is being continued",
    )

    p = add_verb(verbs, "move", move_experiment, "move experiment to another project")
    _experiment_id(p, "experiment ID to move")
    p.add_argument("workspace_name", help="name of destination workspace")
    p.add_argument("project_name", help="name of destination project")

    _, set_verbs = add_group(verbs, "set", "set experiment attributes")
    p = add_verb(set_verbs, "description", set_description, "set experiment description")
    _experiment_id(p, "experiment ID to modify")
    p.add_argument("description", help="experiment description")
    p = add_verb(set_verbs, "name", set_name, "set experiment name")
    _experiment_id(p, "experiment ID to modify")
    p.add_argument("name", help="experiment name")
    p = add_verb(set_verbs, "gc-policy", set_gc_policy, "set experiment GC policy and run GC")
    _experiment_id(p, "experiment ID to modify")
    for flag, what in (
        ("--save-experiment-best", "best checkpoints per experiment"),
        ("--save-trial-best", "best checkpoints per trial"),
        ("--save-trial-latest", "latest checkpoints per trial"),
    ):
        p.add_argument(flag, type=int, required=True, help=f"number of {what} to save")
    p.add_argument("--yes", action="store_true", help="automatically answer yes to prompts")
    p = add_verb(set_verbs, "max-slots", set_max_slots, "set `max_slots` of experiment")
    _experiment_id(p, "experiment ID to modify")
    p.add_argument("max_slots", type=_none_or_int, help="max slots (none: no limit)")
    p = add_verb(set_verbs, "weight", set_weight, "set `weight` of experiment")
    _experiment_id(p, "experiment ID to modify")
    p.add_argument("weight", type=float, help="weight")
    p = add_verb(set_verbs, "priority", set_priority, "set `priority` of experiment")
    _experiment_id(p, "experiment ID to modify")
    p.add_argument("priority", type=int, help="priority")
