"""Checks ``det deploy aws up`` runs before it changes anything, each failure a message that says
what to do.

How the AWS side behaves:

- Credentials come from boto3's usual chain (env, ``AWS_PROFILE``, SSO, instance role); STS
  ``GetCallerIdentity`` needs no permission, so it tells "no or bad credentials" apart from
  "not allowed".
- vCPU limits are per region, per *family group* and per market (Service Quotas, service code
  ``ec2``): running on-demand instances of the standard families (A, C, D, H, I, M, R, T, Z)
  share one quota, G and VT another, P another; spot requests have their own. A quota read can be
  refused (no ``servicequotas:GetServiceQuota``); then the check is reported as skipped, not
  failed. An account that has never changed a quota answers NoSuchResource for
  ``GetServiceQuota``; the default then comes from ``GetAWSDefaultServiceQuota``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from infra.aws.program import IMAGE_TAGS
from infra.aws.settings import AwsDeploySettings

# Service Quotas codes of EC2's vCPU limits: (on-demand, spot) per family group.
# fmt: off
VCPU_QUOTAS = {
    "standard": ("L-1216C47A", "L-34B43A08"),  # Standard (A, C, D, H, I, M, R, T, Z)
    "g": ("L-DB2E81BA", "L-3819A6DF"),  # G and VT
    "p": ("L-417A185B", "L-7212CCBC"),  # P
}
# fmt: on
# Single-letter families (and I's im/is variants) count as standard; inf, trn, hpc, mac … do not.
STANDARD_FAMILIES = {*"acdhimrtz", "im", "is"}
_FAMILY = re.compile(r"^([a-z]+?)\d")


class PreflightError(Exception):
    """Checks failed; ``problems`` has one actionable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def family_group(instance_type: str) -> str | None:
    """``g4dn.xlarge`` → ``g``, ``t3.medium`` → ``standard``; None for a group not checked."""
    match = _FAMILY.match(instance_type)
    family = match.group(1) if match else instance_type.split(".")[0]
    if family in ("g", "vt"):
        return "g"
    if family == "p":
        return "p"
    if family in STANDARD_FAMILIES:
        return "standard"
    return None


@dataclass
class PreflightResult:
    account: str
    image_id: str
    notes: list[str] = field(default_factory=list)


def _error_code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def check_identity(session: Any) -> str:
    try:
        return str(session.client("sts").get_caller_identity()["Account"])
    except NoCredentialsError as e:
        raise PreflightError(
            [
                "no AWS credentials: run `aws configure` (or `aws sso login`), or set AWS_PROFILE "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ]
        ) from e
    except (ClientError, BotoCoreError) as e:
        raise PreflightError([f"AWS credentials were refused: {e}; check AWS_PROFILE"]) from e


def check_region(ec2: Any, region: str) -> None:
    try:
        regions = [r["RegionName"] for r in ec2.describe_regions()["Regions"]]
    except (ClientError, BotoCoreError) as e:
        raise PreflightError([f"--region {region}: cannot reach EC2 there ({e})"]) from e
    if region not in regions:
        raise PreflightError(
            [f"--region {region} is not a region of this account; one of {', '.join(regions)}"]
        )


def check_image(ec2: Any, settings: AwsDeploySettings) -> str:
    """The image's id: ``--image-id`` if it exists, else the newest one agent_image/ built."""
    if settings.image_id:
        try:
            images = ec2.describe_images(ImageIds=[settings.image_id])["Images"]
        except ClientError as e:
            images = []
            if not _error_code(e).startswith("InvalidAMIID"):
                raise PreflightError([f"--image-id {settings.image_id}: {e}"]) from e
        if not images:
            raise PreflightError(
                [f"--image-id {settings.image_id}: no such image in {settings.region}"]
            )
        return settings.image_id
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in IMAGE_TAGS.items()]
    images = ec2.describe_images(Owners=["self"], Filters=filters)["Images"]
    if not images:
        tags = ", ".join(f"{k}={v}" for k, v in IMAGE_TAGS.items())
        raise PreflightError(
            [
                f"no Flotilla image (tags {tags}) in {settings.region}: build one with Packer "
                "(agent_image/README.md) or pass --image-id"
            ]
        )
    return str(max(images, key=lambda image: image.get("CreationDate", ""))["ImageId"])


def _vcpus(ec2: Any, instance_types: list[str]) -> dict[str, int]:
    try:
        answer = ec2.describe_instance_types(InstanceTypes=sorted(set(instance_types)))
    except ClientError as e:
        raise PreflightError([f"instance type: {e}"]) from e
    found = {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in answer["InstanceTypes"]}
    missing = [t for t in instance_types if t not in found]
    if missing:
        raise PreflightError([f"instance type {', '.join(missing)} is not offered in this region"])
    return found


def _quota(quotas: Any, code: str) -> float | None:
    try:
        return float(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    except ClientError as e:
        if _error_code(e) != "NoSuchResourceException":
            raise
    answer = quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)
    return float(answer["Quota"]["Value"])


def vcpu_needs(settings: AwsDeploySettings, vcpus: dict[str, int]) -> dict[tuple[str, str], int]:
    """vCPUs needed per (family group, market): the master plus every agent at once."""
    needs: dict[tuple[str, str], int] = {}
    master = family_group(settings.master_instance_type)
    if master:
        needs[(master, "on-demand")] = vcpus[settings.master_instance_type]
    agent = family_group(settings.agent_instance_type)
    if agent and settings.max_dynamic_agents:
        market = "spot" if settings.spot else "on-demand"
        total = vcpus[settings.agent_instance_type] * settings.max_dynamic_agents
        needs[(agent, market)] = needs.get((agent, market), 0) + total
    return needs


def check_quota(ec2: Any, quotas: Any, settings: AwsDeploySettings) -> list[str]:
    """Notes (a skipped check); raises for a quota that does not cover the cluster."""
    types = [settings.master_instance_type, settings.agent_instance_type]
    vcpus = _vcpus(ec2, types)
    notes: list[str] = []
    problems: list[str] = []
    for type_ in types:
        if family_group(type_) is None:
            notes.append(f"vCPU quota of {type_}'s family is not checked")
    for (group, market), needed in vcpu_needs(settings, vcpus).items():
        code = VCPU_QUOTAS[group][0 if market == "on-demand" else 1]
        try:
            limit = _quota(quotas, code)
        except (ClientError, BotoCoreError) as e:
            notes.append(f"vCPU quota {code} not checked: {e}")
            continue
        if limit is not None and needed > limit:
            problems.append(
                f"vCPU quota {code} ({group} family, {market}) is {limit:g} in {settings.region}; "
                f"the master plus {settings.max_dynamic_agents} x {settings.agent_instance_type} "
                f"need {needed}: lower --max-dynamic-agents or request an increase in the "
                "Service Quotas console"
            )
    if problems:
        raise PreflightError(problems)
    return notes


def preflight(session: Any, settings: AwsDeploySettings) -> PreflightResult:
    """Credentials, region, image and vCPU quota, in that order (each needs the one before)."""
    account = check_identity(session)
    ec2 = session.client("ec2", region_name=settings.region)
    check_region(ec2, settings.region)
    image_id = check_image(ec2, settings)
    quotas = session.client("service-quotas", region_name=settings.region)
    notes = check_quota(ec2, quotas, settings)
    return PreflightResult(account, image_id, notes)
