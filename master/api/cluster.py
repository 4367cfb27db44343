"""``/info`` (no auth) and ``/api/v1/master``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from master import __version__, auth, models
from master.api.openapi import documented
from master.api.schemas import Info, MasterInfo
from master.api.wire import timestamp
from master.state import MasterState

router = APIRouter()
DETERMINED_API_VERSION = "0.38.1"


def _info(state: MasterState) -> dict[str, Any]:
    return {
        # Determined's CLI parses this as a PEP 440 version and warns unless it equals its own;
        # we report the Determined API level we implement and our own version beside it.
        "version": DETERMINED_API_VERSION,
        "flotillaVersion": __version__,
        "masterId": state.master_id,
        "clusterId": state.cluster_id,
        "clusterName": state.config.cluster_name,
        "telemetryEnabled": False,
        "ssoProviders": [],
        "externalLoginUri": None,
        "externalLogoutUri": None,
        "branding": "flotilla",
        "rbacEnabled": False,
        "strictJobQueueControl": False,
        "featureSwitches": [],
        "userManagementEnabled": True,
        "isEnterprise": False,
        "hasCustomLogo": False,
        "product": "PRODUCT_COMMUNITY",
    }


@router.get("/info", **documented(Info))
def info(request: Request) -> dict[str, Any]:
    return _info(request.app.state.master)


@router.get("/api/v1/info", **documented(Info))
def info_v1(request: Request) -> dict[str, Any]:
    return _info(request.app.state.master)


@router.get("/api/v1/master", **documented(MasterInfo, 401, 403))
def master(request: Request, _: models.User = Depends(auth.current_user)) -> dict[str, Any]:
    state: MasterState = request.app.state.master
    return {
        **_info(state),
        "startedAt": timestamp(state.started_at),
        "externalUrl": state.config.master_url,
        "resourcePools": [p.pool_name for p in state.config.resource_pools],
        "defaultResourcePool": state.config.default_resource_pool,
    }
