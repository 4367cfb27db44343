"""agent_image/agent.pkr.hcl, parsed with python-hcl2 (Packer is not installed here): the AWS and
GCE sources, what each is wired to in the rest of the repository (the tags `det deploy aws up`
looks images up by, the image family `det deploy gcp up` boots by default, the files and
environment install.sh reads), and the GCE naming rules for image names and labels.

Packer itself (its functions, the plugins' validation, a real build) is not exercised: that
needs Packer and cloud credentials. What is checked here is the template's structure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from infra.aws.program import IMAGE_TAGS
from infra.gcp.settings import IMAGE_FAMILY

IMAGE_DIR = Path(__file__).resolve().parents[2] / "agent_image"
TEMPLATE = IMAGE_DIR / "agent.pkr.hcl"

# https://cloud.google.com/compute/docs/labeling-resources#requirements
GCE_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
GCE_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
# https://cloud.google.com/compute/docs/reference/rest/v1/images (name)
GCE_IMAGE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def unquote(value: Any) -> Any:
    """python-hcl2 keeps a string literal's quotes; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with TEMPLATE.open() as f:
        return hcl2.load(f)


def sources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"amazon-ebs.agent": {...}, ...}`` from the template's source blocks."""
    found: dict[str, dict[str, Any]] = {}
    for block in template["source"]:
        for kind, named in block.items():
            for name, body in named.items():
                found[f"{unquote(kind)}.{unquote(name)}"] = body
    return found


def variables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {unquote(name): body for block in template["variable"] for name, body in block.items()}


def local_expression(template: dict[str, Any], name: str) -> str:
    (block,) = template["locals"]
    expression = block[name]
    assert isinstance(expression, str)
    return expression


def literal_pairs(expression: str) -> dict[str, str]:
    """The ``"key" = <value>`` pairs of a map literal inside ``expression`` (values unquoted)."""
    return {
        key: unquote(value.strip())
        for key, value in re.findall(r'"([^"]+)"\s*=\s*("[^"]*"|[^,}]+)', expression)
    }


def build_block(template: dict[str, Any]) -> dict[str, Any]:
    (build,) = template["build"]
    assert isinstance(build, dict)
    return build


def provisioners(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The bodies of the build's ``provisioner "<kind>"`` blocks, in order."""
    return [
        body
        for block in build_block(template)["provisioner"]
        for name, body in block.items()
        if unquote(name) == kind
    ]


def test_one_build_runs_both_sources_with_the_same_provisioners(template: dict) -> None:
    assert set(sources(template)) == {"amazon-ebs.agent", "googlecompute.agent"}
    build = build_block(template)
    # `packer build -only=amazon-ebs.agent` / `-only=googlecompute.agent` select these names.
    assert build["sources"] == ['"source.amazon-ebs.agent"', '"source.googlecompute.agent"']
    for provisioner in build["provisioner"]:
        for body in provisioner.values():
            assert "only" not in body and "except" not in body, body


def test_both_plugins_are_required(template: dict) -> None:
    (packer,) = template["packer"]
    (plugins,) = packer["required_plugins"]
    assert unquote(plugins["amazon"]["source"]) == "github.com/hashicorp/amazon"
    assert unquote(plugins["googlecompute"]["source"]) == "github.com/hashicorp/googlecompute"


def test_no_data_source_makes_one_cloud_build_need_the_other_clouds_credentials(
    template: dict,
) -> None:
    # Packer evaluates every data source whatever -only says (hashicorp/packer#12434).
    assert "data" not in template


def test_gce_source_builds_the_family_det_deploy_gcp_boots(template: dict) -> None:
    gce = sources(template)["googlecompute.agent"]
    assert unquote(gce["source_image_family"]) == "ubuntu-2204-lts"
    assert [unquote(p) for p in gce["source_image_project_id"]] == ["ubuntu-os-cloud"]
    assert gce["project_id"] == "${var.project_id}"
    assert gce["zone"] == "${var.zone}"
    assert gce["image_family"] == "${var.image_family}"
    assert unquote(gce["image_name"]) == "${var.image_family}-${local.stamp}"
    assert gce["image_labels"] == "${local.image_labels}"

    declared = variables(template)
    assert unquote(declared["image_family"]["default"]) == IMAGE_FAMILY
    assert unquote(declared["zone"]["default"])
    # No default project: the AWS build must not need one, the GCE plugin refuses a build without.
    assert declared["project_id"]["default"] is None


def test_gce_image_name_and_labels_follow_gce_naming_rules(template: dict) -> None:
    declared = variables(template)
    family = unquote(declared["image_family"]["default"])
    stamp_format = re.search(r'formatdate\("([^"]+)"', local_expression(template, "stamp"))
    assert stamp_format is not None
    stamp = stamp_format.group(1).replace("YYYY", "2026").replace("MM", "12").replace("DD", "07")
    stamp = stamp.replace("hh", "21").replace("mm", "47").replace("ss", "05")
    assert GCE_IMAGE_NAME.fullmatch(f"{family}-{stamp}"), f"{family}-{stamp}"

    labels = literal_pairs(local_expression(template, "image_labels"))
    assert {"flotilla-image": "agent", "flotilla-master": "yes"}.items() <= labels.items()
    assert set(labels) >= {"flotilla-wheel", "flotilla-nvidia"}
    for key, value in labels.items():
        assert GCE_LABEL_KEY.fullmatch(key), key
        if not value.startswith(("local.", "substr(")):
            assert GCE_LABEL_VALUE.fullmatch(value), (key, value)

    # The wheel's file name is folded into the label alphabet with the template's own pattern.
    expression = local_expression(template, "image_labels")
    folded = re.search(
        r'"flotilla-wheel" = substr\(regex_replace\(lower\(local\.wheel_name\), '
        r'"([^"]+)", "([^"]*)"\), 0, (\d+)\)',
        expression,
    )
    assert folded is not None, expression
    pattern, replacement, length = folded.group(1), folded.group(2), int(folded.group(3))
    for wheel in ("flotilla-0.1.0-py3-none-any.whl", "Flotilla-10.2.3rc1+local.7-py3-none-any.whl"):
        value = re.sub(pattern, replacement, wheel.lower())[:length]
        assert GCE_LABEL_VALUE.fullmatch(value), value
    # The nvidia value is a driver branch (digits) or "none".
    assert unquote(declared["nvidia_driver_branch"]["default"]).isdigit()
    assert '"none"' in local_expression(template, "nvidia")


def test_aws_source_keeps_the_ami_det_deploy_aws_looks_up(template: dict) -> None:
    aws = sources(template)["amazon-ebs.agent"]
    (ami_filter,) = aws["source_ami_filter"]
    assert [unquote(o) for o in ami_filter["owners"]] == ["099720109477"]  # Canonical
    assert ami_filter["most_recent"] is True
    assert "ubuntu-jammy-22.04-amd64-server" in unquote(ami_filter["filters"]["name"])
    assert unquote(aws["ami_name"]) == "${var.ami_name_prefix}-${local.stamp}"
    (metadata,) = aws["metadata_options"]
    assert unquote(metadata["http_tokens"]) == "required"

    tags = literal_pairs(local_expression(template, "image_tags"))
    assert IMAGE_TAGS.items() <= tags.items()
    assert tags["flotilla:source-ami"] == "{{ .SourceAMI }}"
    assert aws["snapshot_tags"] == "${local.image_tags}"


def test_provisioners_upload_existing_files_and_set_what_install_sh_reads(
    template: dict,
) -> None:
    uploads = provisioners(template, "file")
    assert len(uploads) == 3  # the wheel and the two units
    for upload in uploads:
        source = unquote(upload["source"])
        if source.startswith("${path.root}/"):
            assert (IMAGE_DIR / source.removeprefix("${path.root}/")).is_file(), source

    (shell,) = provisioners(template, "shell")
    assert unquote(shell["script"]) == "${path.root}/install.sh"
    assert "sudo -E bash" in unquote(shell["execute_command"])
    passed = {unquote(v).split("=", 1)[0] for v in shell["environment_vars"]}
    install_sh = (IMAGE_DIR / "install.sh").read_text()
    read = set(re.findall(r'^([A-Z_]+)="\$\{\1:-', install_sh, flags=re.M))
    read |= set(re.findall(r'^: "\$\{([A-Z_]+):\?', install_sh, flags=re.M))
    assert read, "install.sh's environment was not found"
    assert read == passed

    # Every upload destination install.sh installs from is the one the template uploads to.
    destinations = {unquote(u["destination"]) for u in uploads}
    for variable in passed:
        value = next(unquote(v) for v in shell["environment_vars"] if v.startswith(f'"{variable}='))
        path = value.split("=", 1)[1]
        if path.startswith("/tmp/"):
            assert path in destinations, (variable, path)
