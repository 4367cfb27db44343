"""Generate ``docs/reference/*.md`` from the config models, so docs cannot disagree with code.

``python -m master.config_docs`` rewrites the pages; ``--check`` fails (exit 1) when a page is
stale, which the test command runs.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.config import AgentConfig
from harness.experiment_config import ExperimentConfig
from harness.task_config import CommandConfig, ServiceConfig, TensorboardConfig
from master.config import MasterConfig

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference"
PAGES: dict[str, tuple[str, type[BaseModel], str]] = {
    "master-config.md": (
        "Master configuration (`master.yaml`)",
        MasterConfig,
        "Read by `det-master --config master.yaml`. Every field can be overridden by an "
        "environment variable `FLOTILLA_<FIELD>` (nested fields joined by `__`, e.g. "
        "`FLOTILLA_DB__URL`). Durations accept `30s`, `20m`, `2h`, a number of seconds, or `off` "
        "where allowed.",
    ),
    "agent-config.md": (
        "Agent configuration (`agent.yaml`)",
        AgentConfig,
        "Read by `det-agent --config agent.yaml`; command-line flags and `DET_AGENT_<FIELD>` "
        "environment variables override the file.",
    ),
    "command-config.md": (
        "Command configuration",
        CommandConfig,
        "The `config` of `POST /api/v1/commands`, and what `det cmd run --config key=value` sets.",
    ),
    "experiment-config.md": (
        "Experiment configuration",
        ExperimentConfig,
        "The YAML file of `det experiment create CONFIG DIR` (`POST /api/v1/experiments`). "
        "Determined's field names. Lengths (`max_length`, `min_validation_period`, "
        "`min_checkpoint_period`) are one of `{records: N}`, `{batches: N}`, `{epochs: N}`; a "
        "bare number means batches. Durations accept `30s`, `5m`, `off`. Hyperparameters are "
        "described under `hyperparameters` below.",
    ),
    "service-config.md": (
        "Shell and notebook configuration",
        ServiceConfig,
        "The `config` of `POST /api/v1/shells` and `POST /api/v1/notebooks`, and what "
        "`det shell start --config key=value` / `det notebook start --config key=value` set.",
    ),
    "tensorboard-config.md": (
        "TensorBoard configuration",
        TensorboardConfig,
        "The `config` of `POST /api/v1/tensorboards`, and what `det tensorboard start --config "
        "key=value` sets. Like a shell's, except that a TensorBoard needs no slot by default.",
    ),
}


def _default(field: FieldInfo, model: type[BaseModel], name: str) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default_doc" in extra:
        return str(extra["default_doc"])
    try:
        value = model.model_construct().model_dump(mode="json").get(name)
    except Exception:
        value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{value!r}`" if not isinstance(value, dict | list) else f"`{value}`"


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # e.g. Literal["auto"] | timedelta | None
        return " or ".join(_type(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(f"`{arg}`" for arg in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    for old, new in (
        ("typing.", ""),
        ("pathlib.", ""),
        ("NoneType", "null"),
        ("timedelta", "duration"),
    ):
        text = text.replace(old, new)
    return text.replace(" | ", " or ")


def render_model(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        subs = _submodels(annotation)
        path = f"{prefix}{name}"
        description = (field.description or "").replace("\n", " ")
        if len(subs) > 1:  # a discriminated union: one section per kind
            kinds = ", ".join(f"`{_tag(sub)}`" for sub in subs)
            default = _default(field, model, name)
            rows.append(f"| `{path}` | one of {kinds} | {default} | {description} |")
            nested += [(f"{path}` ({_tag(sub)}) `", sub) for sub in subs]
        elif subs:
            nested.append((path, subs[0]))
            kind = "list of objects" if _is_list(annotation) else "object"
            default = _default(field, model, name) if _is_list(annotation) else "see below"
            rows.append(f"| `{path}` | {kind} | {default} | {description} |")
        else:
            rows.append(
                f"| `{path}` | {_type(annotation)} | {_default(field, model, name)} | "
                f"{description} |"
            )
    lines = ["| Field | Type | Default | Description |", "|---|---|---|---|", *rows, ""]
    for path, sub in nested:
        field_prefix = path.split("` (")[0]
        lines += [f"### `{path}`".replace(" ``", ""), "", *render_model(sub, f"{field_prefix}.")]
    return lines


def _tag(model: type[BaseModel]) -> str:
    """The value of a union member's discriminator (its ``Literal`` field: name or type)."""
    for field in model.model_fields.values():
        args = get_args(field.annotation)
        if get_origin(field.annotation) is Literal and len(args) == 1:
            return str(args[0])
    return model.__name__


def _is_list(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is list


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds: itself, a list's item, or every member of a union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is Annotated:
        return _submodels(get_args(annotation)[0])
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += [m for m in _submodels(arg) if m not in found]
    return found


def render_page(title: str, model: type[BaseModel], intro: str) -> str:
    header = [
        f"# {title}",
        "",
        "<!-- Generated by `python -m master.config_docs` from the config models. "
        "Do not edit by hand. -->",
        "",
        intro,
        "",
    ]
    return "\n".join(header + render_model(model)).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for filename, (title, model, intro) in PAGES.items():
        path = DOCS / filename
        text = render_page(title, model, intro)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            "stale generated docs (run `python -m master.config_docs`): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
