"""``det tensorboard``: TensorBoard over experiments' or trials' metrics, through the proxy.

``det tensorboard start EXPERIMENT_ID... [-t TRIAL_ID...]`` posts the ids as Determined's CLI
does (``experimentIds``, ``trialIds``), waits until TensorBoard is ready, prints its URL and
opens a browser with a one-use login link.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cli import service
from cli.errors import CliError
from cli.parser import add_group, add_verb
from cli.session import Session, setup_session
from harness.task_config import TensorboardConfig

if TYPE_CHECKING:
    from cli.parser import SubParsers

TENSORBOARD = service.Kind(
    noun="tensorboard",
    plural="tensorboards",
    title="TensorBoard",
    model=TensorboardConfig,
    headers=(
        "id",
        "username",
        "description",
        "state",
        "experimentIds",
        "trialIds",
        "exitStatus",
        "resourcePool",
        "workspaceName",
    ),
)


def show_tensorboard(sess: Session, tensorboard_id: str, *, browser: bool) -> None:
    service.wait_until_ready(sess, TENSORBOARD, tensorboard_id)
    url = service.proxy_url(sess.client.master, tensorboard_id)
    print(f"TensorBoard is running at: {url}")
    sys.stdout.flush()
    if browser:
        service.offer_browser(sess, tensorboard_id)


def start_tensorboard(args: argparse.Namespace) -> None:
    if not args.experiment_ids and not args.trial_ids:
        raise CliError(
            "nothing to show: give experiment ids (det tensorboard start 1 2) "
            "and/or trial ids (-t 3 4)"
        )
    body = service.launch_body(TENSORBOARD, args)
    body = {"experimentIds": args.experiment_ids, "trialIds": args.trial_ids, **body}
    sess = setup_session(args)
    tensorboard_id = service.launch(sess, TENSORBOARD, body, detach=args.detach)
    if not args.detach:
        show_tensorboard(sess, tensorboard_id, browser=not args.no_browser)


def open_tensorboard(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    tensorboard_id = service.expand_id(sess, TENSORBOARD, args.tensorboard_id)
    show_tensorboard(sess, tensorboard_id, browser=True)


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "tensorboard", "manage TensorBoard instances")
    service.register_common(verbs, noun, TENSORBOARD)

    p = add_verb(verbs, "start", start_tensorboard, "start a new TensorBoard")
    p.add_argument(
        "experiment_ids", type=int, nargs="*", metavar="experiment_id", help="experiment IDs"
    )
    p.add_argument(
        "-t",
        "--trial-ids",
        type=int,
        nargs="+",
        default=[],
        metavar="trial_id",
        help="trial IDs",
    )
    service.add_start_args(p, TENSORBOARD)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")

    p = add_verb(verbs, "open", open_tensorboard, "open an existing TensorBoard")
    p.add_argument("tensorboard_id", help="TensorBoard ID")
