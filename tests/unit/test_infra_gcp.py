"""The GCP deployment program under Pulumi's mocks (no CLI, no credentials): what it creates,
how tightly it is locked down, the master config it wires in, the policy pack's GCP rules (each
against a bad variant of a real plan), and the estimate."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.common.plan import Plan, PlannedResource
from infra.gcp import iam
from infra.gcp.dry_run import DRY_RUN_DB_IP, estimate, plan, render
from infra.gcp.master_config import DEPLOYMENT_LABEL, master_yaml_from_script
from infra.gcp.settings import GcpDeploySettings
from infra.policy.gcp import POLICIES
from infra.policy.runner import check
from provisioner.config import GCPProviderConfig

BASE = {"cluster_id": "demo", "project": "my-project-1", "inbound_cidr": "203.0.113.0/24"}
FIREWALL = "gcp:compute/firewall:Firewall"
SUBNET = "projects/my-project-1/regions/us-central1/subnetworks/flotilla-demo-subnet"


def settings(**fields: Any) -> GcpDeploySettings:
    return GcpDeploySettings(**(BASE | fields))


@pytest.fixture(scope="module")
def default_plan() -> Plan:
    return plan(settings())


def of(result: Plan, kind: str) -> list[PlannedResource]:
    return [r for r in result.resources if r.kind == kind]


def firewall(result: Plan) -> dict[str, Mapping[str, Any]]:
    return {r.name: r.inputs for r in result.of_type(FIREWALL)}


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cluster_id": "Has-Caps"}, "cluster_id"),
        ({"cluster_id": "a" * 21}, "cluster_id"),
        ({"cluster_id": "ends-"}, "cluster_id"),
        ({"project": "x"}, "project"),
        ({"region": "central"}, "region"),
        ({"zone": "europe-west1-b"}, "zone"),
        ({"inbound_cidr": "10.0.0.1/8"}, "inbound_cidr"),
        ({"ssh_cidr": "nowhere"}, "ssh_cidr"),
        ({"network": "shared"}, "network"),
        ({"gpu_type": None, "gpu_num": 2}, "gpu_type"),
        ({"db_tier": "large"}, "db_tier"),
        ({"db": "rds"}, "db"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_settings_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        settings(**fields)


# ---- what the program creates -----------------------------------------------------------------


def test_the_plan_has_the_whole_cluster(default_plan: Plan) -> None:
    kinds = sorted({r.kind for r in default_plan.resources})
    assert kinds == [
        "Account",
        "Address",
        "Bucket",
        "BucketIAMMember",
        "Connection",
        "Database",
        "DatabaseInstance",
        "Firewall",
        "GlobalAddress",
        "IAMCustomRole",
        "IAMMember",
        "Instance",
        "Network",
        "Subnetwork",
        "User",
    ]
    assert default_plan.outputs["master_url"] == "http://198.51.100.20:8080"
    assert default_plan.outputs["bucket"] == "flotilla-demo-my-project-1"
    assert check(default_plan.resources, POLICIES) == []


def test_firewall_opens_the_master_port_to_inbound_cidr_only_and_ssh_not_at_all(
    default_plan: Plan,
) -> None:
    rules = firewall(default_plan)
    assert sorted(rules) == [
        "fw-agents-internal",
        "fw-agents-to-master",
        "fw-master-api",
        "fw-master-to-agents",
    ]
    api = rules["fw-master-api"]
    assert api["sourceRanges"] == ["203.0.113.0/24"]
    assert api["targetTags"] == ["flotilla-demo-master"]
    assert api["allows"] == [{"protocol": "tcp", "ports": ["8080"]}]
    for name in ("fw-agents-internal", "fw-agents-to-master", "fw-master-to-agents"):
        assert "sourceRanges" not in rules[name]  # by network tag, never by address
        assert rules[name]["sourceTags"] and rules[name]["targetTags"]
    assert rules["fw-agents-internal"]["sourceTags"] == ["flotilla-demo-agent"]
    assert all(r["direction"] == "INGRESS" for r in rules.values())


def test_ssh_opens_only_from_ssh_cidr() -> None:
    rules = firewall(plan(settings(ssh_cidr="198.51.100.7/32")))
    assert rules["fw-ssh"]["sourceRanges"] == ["198.51.100.7/32"]
    assert rules["fw-ssh"]["allows"] == [{"protocol": "tcp", "ports": ["22"]}]


def test_the_master_gets_a_custom_role_and_storage_on_its_bucket_only(default_plan: Plan) -> None:
    (role,) = of(default_plan, "IAMCustomRole")
    assert role.inputs["permissions"] == list(iam.MASTER_COMPUTE_PERMISSIONS)
    assert all(p.startswith("compute.") for p in role.inputs["permissions"])
    project_bindings = default_plan.of_type("gcp:projects/iAMMember:IAMMember")
    assert [b.inputs["role"] for b in project_bindings] == [
        "projects/my-project-1/roles/flotilla_demo_master"
    ]
    buckets = default_plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert {(b.inputs["bucket"], b.inputs["role"]) for b in buckets} == {
        ("flotilla-demo-my-project-1", "roles/storage.objectAdmin")
    }
    assert {b.inputs["member"] for b in buckets} == {
        "serviceAccount:fl-demo-master@my-project-1.iam.gserviceaccount.com",
        "serviceAccount:fl-demo-agent@my-project-1.iam.gserviceaccount.com",
    }
    (act_as,) = default_plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert act_as.inputs["serviceAccountId"].endswith(
        "/fl-demo-agent@my-project-1.iam.gserviceaccount.com"
    )
    roles = [r.inputs.get("role") for r in default_plan.resources if "role" in r.inputs]
    assert not [r for r in roles if r in ("roles/owner", "roles/editor", "roles/compute.admin")]


def test_bucket_is_uniform_private_and_kept(default_plan: Plan) -> None:
    bucket = default_plan.named("checkpoints")
    assert bucket.inputs["uniformBucketLevelAccess"] is True
    assert bucket.inputs["publicAccessPrevention"] == "enforced"
    assert bucket.inputs["forceDestroy"] is False


def test_cloud_sql_has_a_private_ip_only(default_plan: Plan) -> None:
    db = default_plan.named("db")
    ip = db.inputs["settings"]["ipConfiguration"]
    assert ip["ipv4Enabled"] is False
    assert ip["privateNetwork"] == "projects/my-project-1/global/networks/flotilla-demo-net"
    assert ip["sslMode"] == "ENCRYPTED_ONLY"
    assert db.inputs["deletionProtection"] is True
    assert default_plan.named("db-range").inputs["purpose"] == "VPC_PEERING"
    assert "password" in default_plan.named("db-user").secrets


def test_the_master_vm_is_shielded_and_its_startup_script_secret(default_plan: Plan) -> None:
    master = default_plan.named("master")
    assert master.inputs["shieldedInstanceConfig"] == {
        "enableIntegrityMonitoring": True,
        "enableSecureBoot": True,
        "enableVtpm": True,
    }
    assert master.inputs["metadata"]["block-project-ssh-keys"] == "TRUE"
    assert "metadata" in master.secrets
    assert master.inputs["tags"] == ["flotilla-demo-master"]
    assert master.inputs["labels"][DEPLOYMENT_LABEL] == "demo"


def rendered_master_yaml(result: Plan) -> dict[str, Any]:
    script = result.named("master").inputs["metadata"]["startup-script"]
    loaded: dict[str, Any] = yaml.safe_load(
        master_yaml_from_script(script, "http://10.20.0.2:8080")
    )
    return loaded


def test_the_master_config_wires_the_gcp_pool_to_what_the_stack_made(default_plan: Plan) -> None:
    config = rendered_master_yaml(default_plan)
    (pool,) = config["resource_pools"]
    provider = pool["provider"]
    assert pool["pool_name"] == config["default_resource_pool"] == "gcp"
    assert provider == {
        "type": "gcp",
        "project": "my-project-1",
        "zone": "us-central1-b",
        "instance_type": {
            "machine_type": "n1-standard-4",
            "gpu_type": "nvidia-tesla-t4",
            "gpu_num": 1,
        },
        "min_instances": 0,
        "max_instances": 5,
        "spot": False,
        "boot_disk_source_image": "projects/my-project-1/global/images/family/flotilla-agent",
        "network_interface": {
            "network": "projects/my-project-1/global/networks/flotilla-demo-net",
            "subnetwork": SUBNET,
            "external_ip": False,
        },
        "network_tags": ["flotilla-demo-agent"],
        "service_account": {
            "email": "fl-demo-agent@my-project-1.iam.gserviceaccount.com",
            "scopes": ["https://www.googleapis.com/auth/devstorage.read_write"],
        },
        "label_key": DEPLOYMENT_LABEL,
        "label_value": "demo",
        "name_prefix": "flotilla-demo-agent-",
    }
    assert config["checkpoint_storage"] == {"type": "gcs", "bucket": "flotilla-demo-my-project-1"}
    assert config["db"]["host"] == DRY_RUN_DB_IP
    assert config["db"]["password"] == "dry-run-db-pw"
    assert config["agent_join_token"] == "dry-run-join-token"
    assert config["external_url"] == "http://10.20.0.2:8080"


def test_the_rendered_master_yaml_is_a_valid_master_config(default_plan: Plan) -> None:
    from master.config import MasterConfig

    parsed = MasterConfig.model_validate(rendered_master_yaml(default_plan))
    provider = parsed.resource_pools[0].provider
    assert isinstance(provider, GCPProviderConfig)
    assert provider.project == "my-project-1" and provider.zone is not None
    assert parsed.checkpoint_storage is not None


def test_db_local_and_an_existing_network_skip_cloud_sql_and_the_network() -> None:
    result = plan(settings(db="local", network="shared", subnetwork="shared-us", spot=True))
    kinds = {r.kind for r in result.resources}
    assert not kinds & {"DatabaseInstance", "Connection", "GlobalAddress", "Network", "Subnetwork"}
    config = rendered_master_yaml(result)
    assert config["db"]["host"] == "127.0.0.1" and config["db"]["ssl_mode"] == "disable"
    provider = config["resource_pools"][0]["provider"]
    assert provider["spot"] is True
    assert (
        provider["network_interface"]["network"] == "projects/my-project-1/global/networks/shared"
    )
    assert firewall(result)["fw-master-api"]["network"].endswith("/networks/shared")


def test_no_gpu_means_no_accelerator_in_the_pool() -> None:
    config = rendered_master_yaml(plan(settings(gpu_num=0, agent_machine_type="e2-standard-4")))
    assert config["resource_pools"][0]["provider"]["instance_type"] == {
        "machine_type": "e2-standard-4"
    }


# ---- the policy pack's GCP rules, each against a bad variant ---------------------------------


def changed(result: Plan, name: str, **inputs: Any) -> list[PlannedResource]:
    return [
        dataclasses.replace(r, inputs={**r.inputs, **inputs}) if r.name == name else r
        for r in result.resources
    ]


def added(result: Plan, type_token: str, name: str, **inputs: Any) -> list[PlannedResource]:
    return [*result.resources, PlannedResource(type_token, name, inputs)]


def violated(resources: list[PlannedResource]) -> list[tuple[str, str]]:
    return [(v.policy, v.resource) for v in check(resources, POLICIES)]


def test_policy_refuses_primitive_and_admin_roles(default_plan: Plan) -> None:
    for role in ("roles/owner", "roles/editor", "roles/compute.admin", "roles/storage.admin"):
        bad = changed(default_plan, "master-role-binding", role=role)
        assert violated(bad) == [("gcp-no-broad-roles", "master-role-binding")], role
    project_act_as = added(
        default_plan,
        "gcp:projects/iAMMember:IAMMember",
        "act-as-all",
        role="roles/iam.serviceAccountUser",
        member="serviceAccount:x@p.iam.gserviceaccount.com",
    )
    assert violated(project_act_as) == [("gcp-no-broad-roles", "act-as-all")]
    escalating = changed(
        default_plan,
        "master-role",
        permissions=[*iam.MASTER_COMPUTE_PERMISSIONS, "resourcemanager.projects.setIamPolicy"],
    )
    assert violated(escalating) == [("gcp-no-broad-roles", "master-role")]


def test_policy_refuses_public_or_non_uniform_buckets(default_plan: Plan) -> None:
    assert violated(changed(default_plan, "checkpoints", publicAccessPrevention="inherited")) == [
        ("gcp-bucket-private", "checkpoints")
    ]
    assert violated(changed(default_plan, "checkpoints", uniformBucketLevelAccess=False)) == [
        ("gcp-bucket-private", "checkpoints")
    ]
    assert violated(changed(default_plan, "checkpoints-agent", member="allUsers")) == [
        ("gcp-bucket-private", "checkpoints-agent")
    ]


def test_policy_refuses_ssh_from_the_world(default_plan: Plan) -> None:
    world_ssh = changed(
        default_plan,
        "fw-master-api",
        allows=[{"protocol": "tcp", "ports": ["8080", "20-25"]}],
        sourceRanges=["0.0.0.0/0"],
    )
    assert violated(world_ssh) == [("gcp-no-ssh-from-world", "fw-master-api")]
    all_ports = changed(
        default_plan, "fw-master-api", allows=[{"protocol": "all"}], sourceRanges=["::/0"]
    )
    assert violated(all_ports) == [("gcp-no-ssh-from-world", "fw-master-api")]
    world_api = changed(default_plan, "fw-master-api", sourceRanges=["0.0.0.0/0"])
    assert violated(world_api) == []  # the master's port may be public (with a warning)


def test_policy_refuses_cloud_sql_with_a_public_ip(default_plan: Plan) -> None:
    db = default_plan.named("db").inputs["settings"]
    public = {**db, "ipConfiguration": {**db["ipConfiguration"], "ipv4Enabled": True}}
    assert violated(changed(default_plan, "db", settings=public)) == [
        ("gcp-cloudsql-private", "db")
    ]
    unset = {**db, "ipConfiguration": {"privateNetwork": "projects/p/global/networks/n"}}
    assert violated(changed(default_plan, "db", settings=unset)) == [("gcp-cloudsql-private", "db")]


def test_policy_wants_shielded_vms_without_serial_console(default_plan: Plan) -> None:
    unshielded = changed(default_plan, "master", shieldedInstanceConfig={"enableVtpm": True})
    assert violated(unshielded) == [("gcp-shielded-vm", "master")]
    metadata = {**default_plan.named("master").inputs["metadata"], "serial-port-enable": "TRUE"}
    assert violated(changed(default_plan, "master", metadata=metadata)) == [
        ("gcp-shielded-vm", "master")
    ]


# ---- the estimate and the dry run's text ------------------------------------------------------


def test_the_estimate_prices_what_the_plan_creates(default_plan: Plan) -> None:
    result = estimate(settings(), default_plan.resources)
    by_item = {line.item: line for line in result.lines}
    assert by_item["master VM e2-standard-2"].monthly == pytest.approx(730 * 0.067006)
    assert by_item["master boot disk pd-balanced"].quantity == 50
    assert by_item["db Cloud SQL PostgreSQL db-custom-1-3840"].unit_price == pytest.approx(0.0676)
    assert by_item["db Cloud SQL storage SSD"].quantity == 20
    assert by_item["master-ip external IPv4 address"].monthly == pytest.approx(3.65)
    assert result.total == pytest.approx(sum(line.monthly for line in result.lines))


def test_a_region_without_prices_says_so_instead_of_guessing() -> None:
    text, violations = render(settings(region="asia-east1"))
    assert violations == []
    assert "No monthly estimate: no prices for region asia-east1" in text


def test_the_pack_holds_each_clouds_rules_under_unique_names() -> None:
    from infra.policy.pack import all_policies

    names = [policy.name for policy in all_policies()]
    assert len(names) == len(set(names))
    assert {policy.name for policy in POLICIES} <= set(names)


# ---- the master's startup script, run in a scratch root -------------------------------------


def run_startup_script(script: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """Run the rendered script as GCE would, with ``curl`` (the metadata server), ``systemctl``,
    ``pg_isready`` and ``sudo`` stubbed on PATH; returns the scratch root and the stubs' calls."""
    import subprocess

    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "calls"
    for name, body in {
        "curl": 'echo "curl $*" >> "$CALLS"; printf 10.20.0.2',
        "systemctl": 'echo "systemctl $*" >> "$CALLS"',
        "pg_isready": "exit 0",
        "sudo": 'echo "sudo $*" >> "$CALLS"; cat > "$CALLS.sql"',
    }.items():
        stub = stubs / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    root = tmp_path / "root"
    (tmp_path / "startup.sh").write_text(script)
    subprocess.run(
        ["bash", str(tmp_path / "startup.sh")],
        env={"PATH": f"{stubs}:/usr/bin:/bin", "FLOTILLA_ROOT": str(root), "CALLS": str(calls)},
        check=True,
        capture_output=True,
        timeout=30,
    )
    return root, calls.read_text().splitlines()


def test_the_startup_script_writes_a_private_master_yaml_and_restarts_the_master(
    default_plan: Plan, tmp_path: Path
) -> None:
    script = default_plan.named("master").inputs["metadata"]["startup-script"]
    root, calls = run_startup_script(script, tmp_path)
    written = root / "etc" / "flotilla" / "master.yaml"
    assert written.stat().st_mode & 0o777 == 0o600
    assert (root / "etc" / "flotilla").stat().st_mode & 0o777 == 0o700
    assert written.read_text() == master_yaml_from_script(script, "http://10.20.0.2:8080")
    assert calls[0].startswith("curl ") and "Metadata-Flavor: Google" in calls[0]
    assert calls[1:] == [
        "systemctl daemon-reload",
        "systemctl enable flotilla-master.service",
        "systemctl restart flotilla-master.service",
    ]


def test_with_db_local_the_startup_script_sets_up_postgresql(tmp_path: Path) -> None:
    script = plan(settings(db="local")).named("master").inputs["metadata"]["startup-script"]
    root, calls = run_startup_script(script, tmp_path)
    assert (root / "etc" / "flotilla" / "db-password").read_text() == "dry-run-db-pw\n"
    assert "systemctl enable --now postgresql.service" in calls
    assert any(call.startswith("sudo -u postgres psql") for call in calls)
    assert "CREATE DATABASE flotilla OWNER flotilla" in (tmp_path / "calls.sql").read_text()
