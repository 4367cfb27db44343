"""``det model`` (alias ``m``): the model registry, with Determined's verbs, arguments and tables.

``create``, ``list``, ``describe``, ``list-versions``, ``register-version`` and ``delete`` are
Determined's (same columns, same ``--json``); ``download-version`` is ours: it downloads the
checkpoint a version pins, as ``det checkpoint download`` does (same ``--mode``s). A model is
named by its name or its numeric id wherever a name is asked for, as the master allows.
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cli import render
from cli.checkpoint import (
    add_download_options,
    download_checkpoint,
    render_checkpoint,
    safe_uuid,
)
from cli.errors import CliError
from cli.parser import add_group, add_verb
from cli.session import Session, setup_session

if TYPE_CHECKING:
    from cli.parser import SubParsers

MODEL_SORTS = ("name", "description", "creation_time", "last_updated_time")
VERSION_HEADERS = [
    "Version #",
    "Trial ID",
    "Batch #",
    "Checkpoint UUID",
    "Validation Metrics",
    "Metadata",
]


def model_path(name: str) -> str:
    return f"/api/v1/models/{quote(name, safe='')}"


def get_model(sess: Session, name: str) -> dict[str, Any]:
    model: dict[str, Any] = sess.client.get(model_path(name))["model"]
    return model


def model_to_json(model: dict[str, Any]) -> dict[str, Any]:
    """Determined's ``render.model_to_json``: the fields its ``--json`` prints."""
    return {
        "name": model.get("name"),
        "id": model.get("id"),
        "description": model.get("description") or "",
        "creation_time": model.get("creationTime"),
        "last_updated_time": model.get("lastUpdatedTime"),
        "metadata": model.get("metadata") or {},
        "archived": bool(model.get("archived")),
    }


def render_model(model: dict[str, Any]) -> None:
    """Determined's one-row model table."""
    table = [
        ("ID", model.get("id")),
        ("Name", model.get("name")),
        ("Description", model.get("description") or ""),
        ("Workspace ID", model.get("workspaceId")),
        ("Creation Time", render.format_time(model.get("creationTime"))),
        ("Last Updated Time", render.format_time(model.get("lastUpdatedTime"))),
        ("Metadata", json.dumps(model.get("metadata") or {}, indent=4)),
    ]
    render.print_table([h for h, _ in table], [[v for _, v in table]])


def render_versions(versions: list[dict[str, Any]]) -> None:
    rows = []
    for version in versions:
        checkpoint = version.get("checkpoint") or {}
        training = checkpoint.get("training") or {}
        metadata = checkpoint.get("metadata")
        rows.append(
            [
                version.get("version"),
                training.get("trialId"),
                (metadata or {}).get("steps_completed"),
                checkpoint.get("uuid"),
                json.dumps(training.get("validationMetrics"), indent=2) if training else "",
                json.dumps(metadata, indent=2),
            ]
        )
    render.print_table(VERSION_HEADERS, rows)


def latest_version(sess: Session, name: str) -> dict[str, Any] | None:
    params = {"limit": 1, "sortBy": "SORT_BY_VERSION", "orderBy": "ORDER_BY_DESC"}
    versions = sess.client.get(f"{model_path(name)}/versions", params)["modelVersions"]
    return versions[0] if versions else None


def get_version(sess: Session, name: str, version: int) -> dict[str, Any] | None:
    """Version ``version`` of the model, the latest for -1 (None when it has none)."""
    if version == -1:
        return latest_version(sess, name)
    found: dict[str, Any] = sess.client.get(f"{model_path(name)}/versions/{version}")[
        "modelVersion"
    ]
    return found


def all_versions(sess: Session, name: str) -> dict[str, Any]:
    params = {"sortBy": "SORT_BY_VERSION", "orderBy": "ORDER_BY_DESC"}
    answer: dict[str, Any] = sess.client.get(f"{model_path(name)}/versions", params)
    return answer


# ---- verbs ---------------------------------------------------------------------------------------


def list_models(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    params: dict[str, Any] = {
        "sortBy": f"SORT_BY_{args.sort_by.upper()}",
        "orderBy": f"ORDER_BY_{args.order_by.upper()}",
    }
    if args.workspace_names:
        params["workspaceNames"] = args.workspace_names.split(",")
    models = sess.client.get("/api/v1/models", params)["models"]
    if args.json:
        render.print_json([model_to_json(m) for m in models])
        return
    headers = ["ID", "Name", "Workspace ID", "Creation Time", "Last Updated Time", "Metadata"]
    rows = [
        [
            m.get("id"),
            m.get("name"),
            m.get("workspaceId"),
            render.format_time(m.get("creationTime")),
            render.format_time(m.get("lastUpdatedTime")),
            json.dumps(m.get("metadata") or {}, indent=2),
        ]
        for m in models
    ]
    render.print_table(headers, rows)


def create(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    body: dict[str, Any] = {"name": args.name, "description": args.description}
    if args.workspace_name:
        body["workspaceName"] = args.workspace_name
    model = sess.client.post("/api/v1/models", body)["model"]
    if args.json:
        render.print_json(model_to_json(model))
    else:
        render_model(model)


def describe(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    model = get_model(sess, args.name)
    version = get_version(sess, args.name, args.version)
    if args.json:
        render.print_json(model_to_json(model))
        return
    render_model(model)
    if version is not None:
        print("\n")
        render_versions([version])


def list_versions(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    answer = all_versions(sess, args.name)
    if args.json:
        render.print_json(answer)
        return
    render_model(answer["model"])
    print("\n")
    render_versions(answer["modelVersions"])


def register_version(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    model = get_model(sess, args.name)
    answer = sess.client.post(
        f"{model_path(str(model['id']))}/versions",
        {"modelName": model["name"], "checkpointUuid": args.uuid},
    )
    if args.json:
        render.print_json(answer)
        return
    render_model(get_model(sess, str(model["id"])))
    print("\n")
    render_versions([answer["modelVersion"]])


def delete(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    model = get_model(sess, args.name)
    sess.client.delete(model_path(str(model["id"])))
    print(f"Deleted model {model['name']} (id {model['id']}); its checkpoints are kept.")


def download_version(args: argparse.Namespace) -> None:
    """The checkpoint a version pins, into ``-o DIR`` (default ``checkpoints/<uuid>``)."""
    sess = setup_session(args)
    version = get_version(sess, args.name, args.version)
    if version is None:
        raise CliError(
            f"model {args.name} has no versions: register one with "
            f"'det model register-version {args.name} <checkpoint-uuid>'"
        )
    ckpt = version["checkpoint"]
    if args.output_dir:
        out = pathlib.Path(args.output_dir)
    else:
        out = pathlib.Path("checkpoints", safe_uuid(str(ckpt.get("uuid") or "")))
    path = download_checkpoint(sess, ckpt, out, args.mode)
    if args.quiet:
        print(path)
    else:
        render_checkpoint(ckpt, path)


def register(nouns: SubParsers) -> None:
    parser, verbs = add_group(nouns, "m|odel", "manage models")

    p = add_verb(
        verbs, "list ls", list_models, "list all models in the registry", default_for=parser
    )
    p.add_argument(
        "-w",
        "--workspace-names",
        type=str,
        help="list models in given list of comma-separated workspaces",
    )
    p.add_argument(
        "--sort-by",
        choices=MODEL_SORTS,
        default="last_updated_time",
        help="sort models by the given field",
    )
    p.add_argument(
        "--order-by",
        choices=("asc", "desc"),
        default="asc",
        help="order models in either ascending or descending order",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add_verb(verbs, "register-version", register_version, "register a new version of a model")
    p.add_argument("name", help="name of the model")
    p.add_argument("uuid", help="uuid to register as the next version of the model")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add_verb(verbs, "describe", describe, "describe model")
    p.add_argument("name", help="name of model to describe")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument(
        "--version", type=int, default=-1, help="model version information to include in output"
    )

    p = add_verb(verbs, "list-versions", list_versions, "list the versions of a model")
    p.add_argument("name", help="unique name of the model")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = add_verb(
        verbs, "download-version", download_version, "download the checkpoint of a model version"
    )
    p.add_argument("name", help="name of the model")
    p.add_argument(
        "version", type=int, nargs="?", default=-1, help="version number (default: the latest)"
    )
    add_download_options(p)

    p = add_verb(verbs, "delete", delete, "delete model")
    p.add_argument("name", help="unique name of the model")

    p = add_verb(verbs, "create", create, "create model")
    p.add_argument("name", help="unique name of the model")
    p.add_argument(
        "-w",
        "--workspace-name",
        type=str,
        default=None,
        help="workspace name (only the default, Uncategorized, exists)",
    )
    p.add_argument("--description", type=str, default="", help="description of the model")
    p.add_argument("--json", action="store_true", help="print as JSON")
