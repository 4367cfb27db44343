"""``det deploy aws up|down|list``: a whole cluster on AWS, made by the Pulumi program in
``infra/aws`` through Pulumi's Automation API (``infra.common.automation``).

``up`` validates the flags, prints the monthly estimate of the base infrastructure (from the
program run under mocks), runs the preflight checks (credentials, region, image, vCPU quota,
the Pulumi CLI) before any change, previews with the mandatory policy pack, asks (unless
``--yes``), applies, prints the master's URL and ``export DET_MASTER=…`` and waits for ``/info``.
``--dry-run`` stops after the plan and the estimate and needs neither credentials nor the Pulumi
CLI. ``down`` stops the master and terminates the agents with boto3 first (reported even when
Pulumi then fails), then destroys the stack. ``list`` shows the stacks.

The heavy imports (pulumi, boto3, infra) happen inside the handlers: ``det`` starts without
them, and a machine with only the ``cli`` extra gets a message naming the ``deploy`` extra.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import TYPE_CHECKING, Any

from cli.deploy_cloud import (
    MASTER_INFO_TIMEOUT_S,
    confirm,
    no_program,
    print_deployments,
    pulumi_workspace,
    require_deploy_extra,
    require_pulumi_and_passphrase,
    settings_error,
    stream,
    wait_for_master,
    warn,
)
from cli.errors import CliError
from cli.parser import add_group, add_verb

if TYPE_CHECKING:
    from cli.parser import SubParsers
    from infra.aws.settings import AwsDeploySettings

# Settings fields by the flag that sets them, for error messages.
FLAG_OF = {
    "cluster_id": "--cluster-id",
    "region": "--region",
    "inbound_cidr": "--inbound-cidr",
    "ssh_cidr": "--ssh-cidr",
    "keypair": "--keypair",
    "image_id": "--image-id",
    "master_instance_type": "--master-instance-type",
    "agent_instance_type": "--agent-instance-type",
    "max_dynamic_agents": "--max-dynamic-agents",
    "spot_max_price": "--spot-max-price",
    "db": "--db",
    "db_instance_type": "--db-instance-type",
    "vpc_id": "--vpc-id",
    "subnet_ids": "--subnet-ids",
    "master_port": "--master-port",
    "log_retention_days": "--log-retention-days",
}


def _deploy_imports() -> None:
    require_deploy_extra("det deploy aws", ("boto3", "pulumi", "pulumi_aws"))


def settings_from(args: argparse.Namespace) -> AwsDeploySettings:
    """The flags as validated settings; a bad value is a CliError naming its flag."""
    from pydantic import ValidationError

    from infra.aws.settings import AwsDeploySettings

    values: dict[str, Any] = {
        "cluster_id": args.cluster_id,
        "region": args.region,
        "inbound_cidr": args.inbound_cidr,
    }
    for name in FLAG_OF:
        value = getattr(args, name, None)
        if value is not None and name not in values:
            values[name] = value
    if getattr(args, "spot", False):
        values["spot"] = True
    if isinstance(values.get("subnet_ids"), str):
        values["subnet_ids"] = tuple(s for s in values["subnet_ids"].split(",") if s)
    try:
        return AwsDeploySettings(**values)
    except ValidationError as e:
        raise settings_error(e, FLAG_OF) from None


def _session(region: str) -> Any:
    from infra.aws.state import session

    return session(region)


def _workspace(backend: str, region: str) -> Any:
    from infra.aws.program import PROJECT

    return pulumi_workspace(PROJECT, backend, {"AWS_REGION": region})


_wait_for_master = wait_for_master


def up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.inbound_is_world:
        warn(
            f"--inbound-cidr {settings.inbound_cidr} opens the master's port to the whole "
            "internet; give your network's range instead unless you mean it"
        )
    from infra.aws import dry_run

    result = dry_run.render(settings)
    if args.dry_run:
        print(f"{result.plan}\n\n{result.estimate}")
        return 1 if result.violations else 0
    _deploy_imports()
    print(result.estimate)
    if result.violations:
        refused = "; ".join(map(str, result.violations))
        raise CliError(f"the policy pack refuses this plan: {refused}")
    require_pulumi_and_passphrase(args.state)
    from infra.aws.preflight import PreflightError, preflight

    session = _session(settings.region)
    try:
        checked = preflight(session, settings)
    except PreflightError as e:
        raise CliError("preflight failed:\n  " + "\n  ".join(e.problems)) from None
    for note in checked.notes:
        warn(note)
    return _apply(args, settings, session, checked.account, checked.image_id)


def _apply(
    args: argparse.Namespace,
    settings: AwsDeploySettings,
    session: Any,
    account: str,
    newest_image: str,
) -> int:
    """Run ``up``. Without ``--image-id`` a running cluster keeps its image (a new one would
    replace the master); a new cluster gets the newest."""
    from infra.aws.program import DB_PASSWORD_KEY, JOIN_TOKEN_KEY, program
    from infra.common.automation import DeployError, current_outputs, deploy_up
    from infra.policy.pack import PACK_DIR

    def ask(changes: dict[str, int]) -> bool:
        summary = ", ".join(f"{op} {n}" for op, n in sorted(changes.items()) if op != "same")
        if args.yes:
            return True
        return confirm(f"Apply these changes to cluster {settings.cluster_id} ({summary})?")

    from infra.aws.state import backend_url

    try:
        backend = backend_url(session, settings.region, args.state, account, create=True)
        workspace = _workspace(backend, settings.region)
        if settings.image_id is None:
            running = current_outputs(workspace, settings.cluster_id, program(settings))
            image = str(running.get("image_id") or newest_image)
            kept = "the cluster's current" if running.get("image_id") else "the newest"
            print(f"Using {kept} image {image} (--image-id picks another)", file=sys.stderr)
            settings = settings.model_copy(update={"image_id": image})
        outcome = deploy_up(
            workspace,
            settings.cluster_id,
            program(settings),
            config={"aws:region": settings.region},
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
    url = str(outcome.outputs["master_url"])
    print(f"Cluster {settings.cluster_id} is up: {url}")
    print(f"export DET_MASTER={url}")
    print(f"Waiting for {url}/info ...", file=sys.stderr)
    if not _wait_for_master(url):
        raise CliError(
            f"the master at {url} did not answer /info within {MASTER_INFO_TIMEOUT_S:.0f} s; "
            f"see its boot log: aws ec2 get-console-output --instance-id "
            f"{outcome.outputs.get('master_instance_id')} --region {settings.region}"
        )
    print("The master answers.")
    return 0


def down(args: argparse.Namespace) -> int:
    _deploy_imports()
    from infra.aws.agents import teardown

    cluster = args.cluster_id
    if not args.yes and not confirm(
        f"Stop cluster {cluster} in {args.region}, terminate its agents and destroy its stack?"
    ):
        return 0
    session = _session(args.region)
    report = teardown(session, args.region, cluster, stream)
    for line in report.lines():
        print(f"Agents: {line}")
    pulumi_ok = _destroy_stack(args, session, cluster)
    if not (report.complete and pulumi_ok):
        raise CliError(f"cluster {cluster} is not fully torn down (see above); run down again")
    return 0


def _destroy_stack(args: argparse.Namespace, session: Any, cluster: str) -> bool:
    from infra.aws.program import PROJECT
    from infra.aws.state import backend_url
    from infra.common.automation import DeployError, deploy_destroy

    try:
        require_pulumi_and_passphrase(args.state)
        workspace = _workspace(backend_url(session, args.region, args.state), args.region)
        deploy_destroy(workspace, cluster, no_program(cluster), stream)
    except (CliError, DeployError) as e:
        print(f"Stack: not destroyed: {e}")
        return False
    print(
        f"Stack: {PROJECT}/{cluster} destroyed (the checkpoint bucket is kept: delete it with "
        "`aws s3 rb --force s3://<bucket>` when you no longer need the checkpoints)"
    )
    return True


def list_clusters(args: argparse.Namespace) -> int:
    _deploy_imports()
    from infra.common.automation import DeployError, list_deployments

    require_pulumi_and_passphrase(args.state)
    from infra.aws.state import backend_url

    try:
        backend = backend_url(_session(args.region), args.region, args.state)
        infos = list_deployments(_workspace(backend, args.region), no_program("list"))
    except DeployError as e:
        raise CliError(e.message) from None
    print_deployments(infos)
    return 0


def _common(p: argparse.ArgumentParser, *, cluster: bool = True) -> None:
    if cluster:
        p.add_argument("--cluster-id", required=True, help="the cluster's name (the stack's)")
    p.add_argument("--region", required=True, help="AWS region, e.g. us-east-1")
    p.add_argument(
        "--state",
        default=None,
        help="Pulumi backend URL (default: s3://flotilla-pulumi-state-<account>-<region>, "
        "made on first use); e.g. file://~/.flotilla/pulumi",
    )


def register_kind(kinds: SubParsers) -> None:
    """``det deploy aws …`` (the deploy group itself is made by :mod:`cli.deploy`)."""
    _, verbs = add_group(kinds, "aws", "a cluster on AWS, made with Pulumi (infra/aws)")
    p = add_verb(verbs, "up", up, "create or update a cluster on AWS")
    _common(p)
    p.add_argument(
        "--inbound-cidr",
        required=True,
        help="addresses allowed to reach the master, e.g. 203.0.113.0/24 (0.0.0.0/0 warns)",
    )
    p.add_argument("--ssh-cidr", default=None, help="allow SSH from here (default: no SSH)")
    p.add_argument("--keypair", default=None, help="EC2 key pair for the master and agents")
    p.add_argument("--image-id", default=None, help="AMI (default: newest from agent_image/)")
    p.add_argument("--master-instance-type", default=None, help="default t3.medium")
    p.add_argument("--agent-instance-type", default=None, help="default g4dn.xlarge")
    p.add_argument("--max-dynamic-agents", type=int, default=None, help="default 5")
    p.add_argument("--spot", action="store_true", help="launch agents on spot first")
    p.add_argument("--spot-max-price", type=float, default=None, help="$/hour cap for spot")
    p.add_argument(
        "--db",
        choices=["rds", "local"],
        default=None,
        help="rds (default): PostgreSQL on RDS; local: PostgreSQL on the master",
    )
    p.add_argument("--db-instance-type", default=None, help="RDS class, default db.t3.micro")
    p.add_argument("--vpc-id", default=None, help="use this VPC (with --subnet-ids)")
    p.add_argument("--subnet-ids", default=None, help="comma-separated subnets of --vpc-id")
    p.add_argument("--master-port", type=int, default=None, help="default 8080")
    p.add_argument("--log-retention-days", type=int, default=None, help="default 30")
    p.add_argument("--dry-run", action="store_true", help="print plan and estimate; no changes")
    p.add_argument("--yes", action="store_true", help="do not ask before applying")
    p = add_verb(verbs, "down", down, "terminate a cluster's agents and destroy its stack")
    _common(p)
    p.add_argument("--yes", action="store_true", help="do not ask first")
    p = add_verb(verbs, "list ls", list_clusters, "list the clusters deployed on AWS")
    _common(p, cluster=False)
