"""Checks of deployment settings that AWS and GCP apply alike."""

from __future__ import annotations

import ipaddress


def cidr_block(value: str | None) -> str | None:
    """``value`` as a normalized CIDR block (None stays None); ``ValueError`` naming the value
    and an example when it is not one (host bits set count as not one)."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as e:
        raise ValueError(f"{value!r} is not a CIDR block like 203.0.113.0/24 ({e})") from e
