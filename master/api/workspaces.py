"""``/api/v1/workspaces``: the one default workspace every task belongs to.

Flotilla has no workspaces or projects yet; Determined's clients still ask for the list (``det
cmd list`` resolves workspace names) and every command carries a ``workspaceId``. Both see
Determined's default workspace, ``Uncategorized`` with id 1, which is what a fresh Determined
cluster shows.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from master import auth, models
from master.api.errors import not_found
from master.api.openapi import documented
from master.api.schemas import WorkspaceList, WorkspaceReply
from master.api.wire import Int64, pagination

router = APIRouter(prefix="/api/v1/workspaces")
DEFAULT_WORKSPACE_ID = 1


def _default_workspace() -> dict[str, Any]:
    return {
        "id": DEFAULT_WORKSPACE_ID,
        "name": "Uncategorized",
        "archived": False,
        "errorMessage": "",
        "immutable": True,
        "numExperiments": 0,
        "numProjects": 1,
        "pinned": False,
        "state": "WORKSPACE_STATE_UNSPECIFIED",
        "userId": 1,
        "username": "admin",
    }


@router.get("", **documented(WorkspaceList))
def list_workspaces(_: models.User = Depends(auth.current_user)) -> dict[str, Any]:
    return {"workspaces": [_default_workspace()], "pagination": pagination(0, 0, 1)}


@router.get("/{workspace_id}", **documented(WorkspaceReply, 404))
def get_workspace(
    workspace_id: Int64, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    if workspace_id != DEFAULT_WORKSPACE_ID:
        raise not_found(f"workspace {workspace_id}")
    return {"workspace": _default_workspace()}
