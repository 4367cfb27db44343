"""``det deploy gcp up|down|list``: a Flotilla cluster on GCP, made by the Pulumi program in
``infra/gcp`` through Pulumi's Automation API.

- ``up`` validates the flags into :class:`infra.gcp.settings.GcpDeploySettings` (a bad flag is
  named with what is allowed), then with ``--dry-run`` prints the plan, the policy pack's
  verdict and the monthly estimate from the program run under Pulumi's mocks: no Pulumi CLI,
  no credentials, no network; exit 1 if a policy is violated. Without it: preview with the
  mandatory policy pack, show the change summary, ask (unless ``--yes``), then update.
- ``down`` first stops the master and deletes the cluster's agent VMs by label through the
  Compute API (``infra.gcp.agents``: they are not in the stack), then destroys the stack. The
  checkpoint bucket is kept; Cloud SQL has deletion protection (see docs/deploy-gcp.md).
- ``list`` shows every deployment in the state backend with its master URL.

State: ``--state`` is Pulumi's backend URL (``gs://bucket/prefix`` for a team,
``file://~/.flotilla/pulumi`` by default); the stack's secrets (join token, database password)
are encrypted with ``PULUMI_CONFIG_PASSPHRASE``.
"""

from __future__ import annotations

import argparse
import os
import secrets
from typing import TYPE_CHECKING, Any

from cli.deploy_cloud import (
    confirm,
    pulumi_workspace,
    require_deploy_extra,
    settings_error,
    stream,
    warn,
)
from cli.errors import CliError
from cli.parser import add_group, add_verb
from cli.session import flotilla_home

if TYPE_CHECKING:
    from cli.parser import SubParsers
    from infra.gcp.settings import GcpDeploySettings

# Flags whose names differ from the settings' fields.
_FIELD_FLAGS = {"db_tier": "--db-tier", "spot": "--spot", "image": "--image"}


def default_state() -> str:
    return (flotilla_home() / "pulumi").as_uri()


def _flag(field: str) -> str:
    return _FIELD_FLAGS.get(field, "--" + field.replace("_", "-"))


def settings_from_args(args: argparse.Namespace) -> GcpDeploySettings:
    """The validated settings, or a CliError naming the flag and what it allows."""
    require_deploy_extra("det deploy gcp", ("pydantic", "infra.gcp.settings"))
    from pydantic import ValidationError

    from infra.gcp.settings import GcpDeploySettings

    fields: dict[str, Any] = {
        "cluster_id": args.cluster_id,
        "project": args.project,
        "region": args.region,
        "zone": args.zone,
        "inbound_cidr": args.inbound_cidr,
        "ssh_cidr": args.ssh_cidr,
        "image": args.image,
        "master_machine_type": args.master_machine_type,
        "agent_machine_type": args.agent_machine_type,
        "gpu_type": args.gpu_type,
        "gpu_num": args.gpu_num,
        "max_dynamic_agents": args.max_dynamic_agents,
        "spot": args.spot,
        "db": "local" if args.db == "local" else "cloudsql",
        "db_tier": args.db_tier,
        "network": args.network,
        "subnetwork": args.subnetwork,
    }
    try:
        return GcpDeploySettings(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        raise settings_error(e, {f: _flag(f) for f in GcpDeploySettings.model_fields}) from None


def _workspace(args: argparse.Namespace) -> Any:
    from infra.common.automation import DeployError
    from infra.gcp.program import PROJECT

    try:
        return pulumi_workspace(PROJECT, args.state, _pulumi_env(args))
    except DeployError as e:
        raise CliError(e.message) from None


def _pulumi_env(args: argparse.Namespace) -> dict[str, str]:
    env = {}
    if getattr(args, "project", None):
        env["GOOGLE_PROJECT"] = args.project
    return env


def up(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.inbound_is_world:
        warn(
            f"--inbound-cidr {settings.inbound_cidr} opens the master's port to the whole internet"
        )
    if args.dry_run:
        from infra.gcp.dry_run import render

        text, violations = render(settings)
        print(text)
        return 1 if violations else 0
    from infra.common.automation import DeployError, deploy_up
    from infra.gcp.program import DB_PASSWORD_KEY, JOIN_TOKEN_KEY, program
    from infra.policy.pack import PACK_DIR

    def ask(changes: dict[str, int]) -> bool:
        summary = ", ".join(f"{n} to {op}" for op, n in sorted(changes.items())) or "no changes"
        print(f"Preview of {settings.cluster_id}: {summary}")
        return bool(args.yes) or confirm("Apply these changes?")

    try:
        outcome = deploy_up(
            _workspace(args),
            settings.cluster_id,
            program(settings),
            config={"gcp:project": settings.project, "gcp:region": settings.region},
            secrets={
                JOIN_TOKEN_KEY: lambda: secrets.token_urlsafe(32),
                DB_PASSWORD_KEY: lambda: secrets.token_urlsafe(24),
            },
            policy_packs=[str(PACK_DIR)],
            confirm=ask,
            on_output=stream,
        )
    except DeployError as e:
        raise CliError(e.message) from None
    if outcome.outputs is None:
        print("Nothing changed.")
        return 0
    url = outcome.outputs.get("master_url")
    print(f"Master: {url}  (use it with `det -m {url} …` or DET_MASTER)")
    return 0


def down(args: argparse.Namespace) -> int:
    from infra.common.automation import DeployError, deploy_destroy
    from infra.gcp import agents
    from infra.gcp.program import program
    from infra.gcp.settings import GcpDeploySettings

    try:
        instances, _operations = agents.compute_clients(args.compute_endpoint)
        report = agents.delete_agents(
            args.project,
            args.cluster_id,
            instances=instances,
            wait_s=args.wait,
            on_progress=print,
        )
    except Exception as e:  # the Compute step failing must not hide behind Pulumi's
        raise CliError(
            f"could not delete the agents of {args.cluster_id} in {args.project}: "
            f"{type(e).__name__}: {e}; nothing was destroyed"
        ) from None
    for line in report.lines():
        print(line)
    if report.remaining:
        raise CliError(
            f"{len(report.remaining)} agent VM(s) still exist; run `det deploy gcp down` again "
            "once they are gone (nothing was destroyed)"
        )
    if args.agents_only:
        return 0
    # The program is only consulted for its outputs; destroy needs no settings beyond the name.
    placeholder = GcpDeploySettings(
        cluster_id=args.cluster_id, project=args.project, inbound_cidr="127.0.0.1/32"
    )
    try:
        deploy_destroy(_workspace(args), args.cluster_id, program(placeholder), print)
    except DeployError as e:
        raise CliError(e.message) from None
    print(f"Destroyed {args.cluster_id}; the checkpoint bucket is kept.")
    return 0


def list_deployments(args: argparse.Namespace) -> int:
    from infra.common.automation import DeployError, list_deployments
    from infra.gcp.program import program
    from infra.gcp.settings import GcpDeploySettings

    placeholder = GcpDeploySettings(
        cluster_id="x", project="placeholder", inbound_cidr="127.0.0.1/32"
    )
    try:
        stacks = list_deployments(_workspace(args), program(placeholder))
    except DeployError as e:
        raise CliError(e.message) from None
    if not stacks:
        print(f"No GCP deployments in {args.state}")
        return 0
    print(f"{'CLUSTER':<22} {'PROJECT':<24} {'MASTER':<32} LAST UPDATE")
    for info in stacks:
        out = info.outputs or {}
        print(
            f"{info.name:<22} {out.get('project', '?')!s:<24} "
            f"{out.get('master_url', '?')!s:<32} {info.last_update or ''}"
        )
    return 0


def register(kinds: SubParsers) -> None:
    """``gcp`` under ``det deploy`` (registered by :mod:`cli.deploy`)."""
    _, verbs = add_group(kinds, "gcp", "a cluster on Google Cloud (Compute Engine, Cloud SQL, GCS)")
    p = add_verb(verbs, "up", up, "create or update a GCP deployment")
    p.add_argument("--cluster-id", required=True, help="the deployment's name (stack, labels)")
    p.add_argument("--project", required=True, help="GCP project id")
    p.add_argument("--region", default=None, help="GCP region (default us-central1)")
    p.add_argument("--zone", default=None, help="zone of master and agents (default: <region>-b)")
    p.add_argument(
        "--inbound-cidr", required=True, help="who may reach the master's port, e.g. 203.0.113.0/24"
    )
    p.add_argument("--ssh-cidr", default=None, help="allow SSH from this CIDR (default: closed)")
    p.add_argument("--master-machine-type", default=None, help="default e2-standard-2")
    p.add_argument("--agent-machine-type", default=None, help="default n1-standard-4")
    p.add_argument("--gpu-type", default=None, help="GPU per agent (default nvidia-tesla-t4)")
    p.add_argument("--gpu-num", type=int, default=None, help="GPUs per agent; 0 for none")
    p.add_argument("--max-dynamic-agents", type=int, default=None, help="most agents (default 5)")
    p.add_argument(
        "--spot",
        "--preemptible",
        dest="spot",
        action="store_true",
        default=None,
        help="agents on Spot VMs first (--preemptible is Determined's name)",
    )
    db = p.add_mutually_exclusive_group()
    db.add_argument("--db-tier", default=None, help="Cloud SQL tier (default db-custom-1-3840)")
    db.add_argument(
        "--db",
        choices=["cloudsql", "local"],
        default=None,
        help="`local`: PostgreSQL on the master VM instead of Cloud SQL",
    )
    p.add_argument("--network", default=None, help="use this VPC network instead of a new one")
    p.add_argument("--subnetwork", default=None, help="with --network: its subnetwork")
    p.add_argument(
        "--image", default=None, help="master/agent image (default: family flotilla-agent)"
    )
    p.add_argument("--state", default=default_state(), help="Pulumi state backend URL")
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan and estimate; change nothing"
    )
    p.add_argument("--yes", action="store_true", help="apply without asking")

    p = add_verb(verbs, "down", down, "delete a GCP deployment's agents, then the stack")
    p.add_argument("--cluster-id", required=True, help="the deployment's name")
    p.add_argument("--project", required=True, help="GCP project id")
    p.add_argument("--state", default=default_state(), help="Pulumi state backend URL")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for agents to go")
    p.add_argument(
        "--agents-only", action="store_true", help="only delete the agent VMs; keep the stack"
    )
    p.add_argument(
        "--compute-endpoint",
        default=os.environ.get("FLOTILLA_COMPUTE_ENDPOINT"),
        help=argparse.SUPPRESS,  # the tests' fake Compute API
    )

    p = add_verb(verbs, "list ls", list_deployments, "list GCP deployments")
    p.add_argument("--state", default=default_state(), help="Pulumi state backend URL")
