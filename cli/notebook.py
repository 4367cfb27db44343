"""``det notebook``: JupyterLab on the cluster, reached in a browser through the master's proxy.

``det notebook start`` waits until Jupyter is ready, then checks that it answers through the
proxy (``GET /proxy/<id>/api/status``) before saying where it runs, so a notebook that the
master cannot reach fails here rather than as a blank tab. The browser gets a one-use login link
(``POST /api/v1/tasks/<id>/proxy-ticket``) that sets a cookie for ``/proxy/<id>/``; Jupyter's
own token never leaves the master, which adds it when forwarding.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cli import service
from cli.parser import add_group, add_verb
from cli.session import Session, setup_session
from harness.task_config import ServiceConfig

if TYPE_CHECKING:
    from cli.parser import SubParsers

NOTEBOOK = service.Kind(noun="notebook", plural="notebooks", title="Notebook", model=ServiceConfig)
# Jupyter Server's status endpoint: JSON, cheap, and needs Jupyter's token (which the proxy adds).
STATUS_PATH = "api/status"


def notebook_url(sess: Session, notebook_id: str) -> str:
    return service.proxy_url(sess.client.master, notebook_id) + "lab"


def show_notebook(sess: Session, notebook_id: str, *, browser: bool) -> None:
    """Wait until the notebook answers through the proxy, say where, and open a browser."""
    service.wait_until_ready(sess, NOTEBOOK, notebook_id)
    service.wait_for_proxy(sess, NOTEBOOK, notebook_id, STATUS_PATH)
    print(f"Jupyter Notebook is running at: {notebook_url(sess, notebook_id)}")
    sys.stdout.flush()
    if browser:
        service.offer_browser(sess, notebook_id)


def start_notebook(args: argparse.Namespace) -> None:
    body = service.launch_body(NOTEBOOK, args)
    sess = setup_session(args)
    notebook_id = service.launch(sess, NOTEBOOK, body, detach=args.detach)
    if not args.detach:
        show_notebook(sess, notebook_id, browser=not args.no_browser)


def open_notebook(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    show_notebook(sess, service.expand_id(sess, NOTEBOOK, args.notebook_id), browser=True)


def register(nouns: SubParsers) -> None:
    noun, verbs = add_group(nouns, "notebook", "manage notebooks")
    service.register_common(verbs, noun, NOTEBOOK)

    p = add_verb(verbs, "start", start_notebook, "start a new notebook")
    service.add_start_args(p, NOTEBOOK)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")

    p = add_verb(verbs, "open", open_notebook, "open an existing notebook")
    p.add_argument("notebook_id", help="notebook ID")
