"""Response bodies of the model registry (``master.api.registry``): Determined's ``v1Model``,
``v1ModelVersion`` and the replies that carry them."""

from __future__ import annotations

from typing import Any

from master.api.experiment_schemas import Checkpoint
from master.api.openapi import Shape
from master.api.schemas import Pagination


class Model(Shape):
    """Determined's ``v1Model``; ``workspaceId`` is always the default workspace (1)."""

    id: int
    name: str
    description: str
    notes: str
    metadata: dict[str, Any]
    labels: list[str]
    user_id: int
    username: str
    archived: bool
    creation_time: str
    last_updated_time: str
    num_versions: int
    workspace_id: int


class ModelVersion(Shape):
    """Determined's ``v1ModelVersion``: version ``version`` of ``model``, pinning ``checkpoint``."""

    id: int
    version: int
    model: Model
    checkpoint: Checkpoint
    name: str
    comment: str
    notes: str
    metadata: dict[str, Any]
    labels: list[str]
    user_id: int
    username: str
    creation_time: str
    last_updated_time: str


class ModelReply(Shape):
    model: Model


class ModelList(Shape):
    models: list[Model]
    pagination: Pagination


class ModelVersionReply(Shape):
    model_version: ModelVersion


class ModelVersionList(Shape):
    model: Model
    model_versions: list[ModelVersion]
    pagination: Pagination


class ModelLabels(Shape):
    labels: list[str]
