"""What AWS and GCP deployments share from ``infra.common``: the master's boot script from its
template and the CIDR check of their settings."""

from __future__ import annotations

import pytest

from infra.common.master_boot import DB_PASSWORD_MARKER, MASTER_YAML_MARKER, master_boot_script
from infra.common.validation import cidr_block

TEMPLATES = ("master-user-data.sh.tmpl", "master-startup-gcp.sh.tmpl")


@pytest.mark.parametrize("template", TEMPLATES)
def test_boot_script_fills_every_placeholder(template: str) -> None:
    script = master_boot_script(
        template, master_yaml="port: 8080\n", db_password="s3cret", local_db=True, port=8080
    )
    assert "@@" not in script
    assert f"<<'{MASTER_YAML_MARKER}'\nport: 8080\n{MASTER_YAML_MARKER}\n" in script
    assert "s3cret" in script


@pytest.mark.parametrize(
    ("field", "marker", "what"),
    [
        ("master_yaml", MASTER_YAML_MARKER, "master.yaml"),
        ("db_password", DB_PASSWORD_MARKER, "the db password"),
    ],
)
def test_boot_script_refuses_a_line_that_would_end_its_heredoc(
    field: str, marker: str, what: str
) -> None:
    values = {"master_yaml": "port: 8080", "db_password": "pw", field: f"a\n{marker}\nb"}
    with pytest.raises(ValueError, match=f"{what} must not contain a line that is exactly"):
        master_boot_script(TEMPLATES[0], local_db=False, port=8080, **values)


def test_cidr_block_normalizes_and_names_a_bad_value() -> None:
    assert cidr_block("2001:db8::/32") == "2001:db8::/32"
    assert cidr_block(None) is None
    with pytest.raises(ValueError, match=r"'10.0.0.1/24' is not a CIDR block like 203\.0\.113"):
        cidr_block("10.0.0.1/24")  # host bits set
    with pytest.raises(ValueError, match="'everyone' is not a CIDR block"):
        cidr_block("everyone")
