"""The names Determined's ``master.yaml`` uses where they differ from ours, so an admin can bring
their file: ``db: {user, password, host, port, name, ssl_mode}``, ``resource_manager:
{default_compute_resource_pool, default_aux_resource_pool}`` and ``log: {level, color}``.

Each is read into the setting it means here (``db.url``, ``default_resource_pool``,
``default_aux_resource_pool``, ``log_level``); giving both spellings with different values is an
error that names both, never a silent choice.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import URL


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy database URL. Unset (and no `host`) means an SQLite file `flotilla.db` in "
            "`data_dir`; use `postgresql://user:pass@host:5432/db` (psycopg2) for real "
            "deployments, or Determined's fields below."
        ),
    )
    host: str | None = Field(
        default=None, description="PostgreSQL host (Determined's `db.host`); instead of `url`."
    )
    port: int = Field(default=5432, ge=1, le=65535, description="PostgreSQL port (`db.port`).")
    user: str | None = Field(default=None, description="PostgreSQL user (`db.user`).")
    password: str | None = Field(default=None, description="PostgreSQL password (`db.password`).")
    name: str | None = Field(default=None, description="PostgreSQL database name (`db.name`).")
    ssl_mode: str | None = Field(
        default=None,
        description="libpq `sslmode` (`disable`, `require`, `verify-full`, …), as Determined's.",
    )
    ssl_root_cert: str | None = Field(
        default=None, description="libpq `sslrootcert`: the CA file for `verify-ca`/`verify-full`."
    )

    @model_validator(mode="after")
    def _url_or_parts(self) -> DatabaseConfig:
        parts = {
            "user": self.user,
            "password": self.password,
            "name": self.name,
            "ssl_mode": self.ssl_mode,
            "ssl_root_cert": self.ssl_root_cert,
        }
        given = [key for key, value in parts.items() if value is not None]
        if self.url and (self.host or given):
            raise ValueError(
                "give either url or Determined's host/port/user/password/name, not both"
            )
        if given and not self.host:
            raise ValueError(f"host is required with {', '.join(given)}")
        return self

    def resolved_url(self) -> str | None:
        """``url``, or a PostgreSQL URL built from Determined's fields; None when neither."""
        if self.url or not self.host:
            return self.url
        query = {}
        if self.ssl_mode:
            query["sslmode"] = self.ssl_mode
        if self.ssl_root_cert:
            query["sslrootcert"] = self.ssl_root_cert
        url = URL.create(
            "postgresql",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.name,
            query=query,
        )
        return url.render_as_string(hide_password=False)


class ResourceManagerConfig(_Section):
    """Determined's ``resource_manager`` section (the ``agent`` kind, the only one here)."""

    type: Literal["agent"] = Field(
        default="agent",
        description="Determined's resource manager kind; only `agent` (agents join the master).",
    )
    default_compute_resource_pool: str | None = Field(
        default=None, description="Same as `default_resource_pool`."
    )
    default_aux_resource_pool: str | None = Field(
        default=None, description="Same as `default_aux_resource_pool`."
    )


# Determined's (logrus) level names → Python's.
LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "fatal": "CRITICAL",
    "panic": "CRITICAL",
}


class LogConfig(_Section):
    """Determined's ``log`` section."""

    level: Literal["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"] = Field(
        default="info", description="Same as `log_level` (`trace` is `DEBUG` here)."
    )
    color: bool = Field(
        default=True,
        description="Accepted for Determined's files; no effect: the master's log is plain text.",
    )
