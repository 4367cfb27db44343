"""Who the CLI talks to the master as: the token cache and Determined's auto-login rules.

Tokens are cached per master and user in ``$FLOTILLA_HOME/auth.json`` (``~/.flotilla`` by
default), mode 0600, in Determined's own v2 layout::

    {"version": 2,
     "masters": {"http://host:8080": {"active_user": "alice", "tokens": {"alice": "..."}}}}

Every read-modify-write holds an ``fcntl`` lock on ``auth.json.lock`` and replaces the file
atomically, so concurrent ``det`` processes never interleave writes.

Which user a command runs as follows Determined's order (``default_load_user_password``):

1. ``-u/--user`` given on the command line;
2. ``DET_USER`` together with ``DET_PASS`` from the environment;
3. the *active user* for this master, set by ``det user login``;
4. ``DET_USER`` alone (a Flotilla addition: Determined would ignore it here);
5. otherwise the default user ``determined`` with a blank password.

A cached token is checked with ``GET /api/v1/me`` and dropped if the master rejects it. Without
a usable token the CLI logs in: with the password from ``DET_PASS`` (when ``DET_USER`` is unset or
names the same user), or the blank password in case 5, or a ``getpass`` prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import pathlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cli.errors import CliError
from harness.client import (
    ForbiddenError,
    MasterClient,
    UnauthenticatedError,
    canonicalize_master_url,
)

DEFAULT_USER = "determined"
DEFAULT_PASSWORD = ""
STORE_VERSION = 2
NOT_LOGGED_IN = "Unauthenticated: Please use 'det user login <username>' for password login."
INVALID_CREDENTIALS = "invalid username or password"


def flotilla_home() -> pathlib.Path:
    """The root of the CLI's local state: ``$FLOTILLA_HOME`` or ``~/.flotilla``."""
    env = os.environ.get("FLOTILLA_HOME")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".flotilla"


def default_master() -> str:
    return os.environ.get("DET_MASTER") or os.environ.get("DET_MASTER_ADDR") or "localhost:8080"


def new_client(master: str, token: str | None = None) -> MasterClient:
    """The one place CLI code builds a client (tests replace it to inject a transport)."""
    return MasterClient(master, token)


class TokenStore:
    """The token cache for one master (see the module docstring for the file layout)."""

    def __init__(self, master: str, path: pathlib.Path | None = None) -> None:
        self.master = canonicalize_master_url(master)
        self.path = path or flotilla_home() / "auth.json"
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._temp_path = self.path.with_name(self.path.name + ".temp")

    def get_active_user(self) -> str | None:
        active = self._read_entry().get("active_user")
        return active if isinstance(active, str) else None

    def get_token(self, user: str) -> str | None:
        token = self._read_entry().get("tokens", {}).get(user)
        return token if isinstance(token, str) else None

    def get_all_users(self) -> list[str]:
        return list(self._read_entry().get("tokens", {}))

    def set_token(self, user: str, token: str) -> None:
        with self._edit() as entry:
            entry.setdefault("tokens", {})[user] = token

    def drop_user(self, user: str) -> None:
        with self._edit() as entry:
            entry.setdefault("tokens", {}).pop(user, None)

    def set_active(self, user: str) -> None:
        with self._edit() as entry:
            if user not in entry.get("tokens", {}):
                raise CliError(NOT_LOGGED_IN)
            entry["active_user"] = user

    def clear_active(self) -> None:
        with self._edit() as entry:
            entry.pop("active_user", None)

    # ---- file handling ------------------------------------------------------------------------

    def _read_entry(self) -> dict[str, Any]:
        with self._locked():
            entry: dict[str, Any] = self._load().get("masters", {}).get(self.master, {})
            return entry

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        with self._locked():
            store = self._load()
            entry = store.setdefault("masters", {}).setdefault(self.master, {})
            yield entry
            fd = os.open(self._temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(store, f, indent=4, sort_keys=True)
            os.chmod(self._temp_path, 0o600)
            os.replace(self._temp_path, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": STORE_VERSION, "masters": {}}
        try:
            store = json.loads(self.path.read_text())
            if not isinstance(store, dict) or not isinstance(store.get("masters", {}), dict):
                raise ValueError("not a token store")
            for entry in store.get("masters", {}).values():
                if not isinstance(entry, dict) or not isinstance(entry.get("tokens", {}), dict):
                    raise ValueError("not a token store")
        except ValueError:
            self.path.unlink(missing_ok=True)
            raise CliError(
                f"the token cache {self.path} was corrupt and has been deleted; please try again"
            ) from None
        store["version"] = STORE_VERSION
        return store


@dataclass
class Session:
    """A logged-in client and the name of the user it acts as."""

    client: MasterClient
    username: str


def env_password_for(user: str) -> str | None:
    """``DET_PASS`` if it is meant for ``user`` (``DET_USER`` unset or the same name)."""
    password = os.environ.get("DET_PASS")
    env_user = os.environ.get("DET_USER")
    if password is not None and (not env_user or env_user == user):
        return password
    return None


def choose_user(requested_user: str | None, store: TokenStore) -> tuple[str, str | None, bool]:
    """``(user, password or None, was_fallback)`` by the order in the module docstring."""
    if requested_user:
        return requested_user, None, False
    env_user = os.environ.get("DET_USER")
    env_pass = os.environ.get("DET_PASS")
    if env_user and env_pass is not None:
        return env_user, env_pass, False
    active = store.get_active_user()
    if active:
        return active, None, False
    if env_user:
        return env_user, None, False
    return DEFAULT_USER, DEFAULT_PASSWORD, True


LOGIN_PASSWORD_HOW = "set DET_PASS, or write the password as one line to stdin"


def prompt_password(prompt: str, how_to_give: str = LOGIN_PASSWORD_HOW) -> str:
    """Prompt on the terminal; without one, read a line from stdin (like Determined's CLI),
    without getpass's warning about echoing. With neither, the error names whose password was
    wanted (from ``prompt``) and ``how_to_give`` says how to give it."""
    try:
        if not sys.stdin.isatty():
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\n")
        return getpass.getpass(prompt)
    except EOFError:
        wanted = prompt.strip().rstrip(":")
        raise CliError(
            f"{wanted}: none given and none can be prompted for (no terminal); {how_to_give}"
        ) from None


def login_with_cache(master: str, requested_user: str | None = None) -> Session:
    """A session for the user chosen by :func:`choose_user`, reusing a cached token if valid."""
    store = TokenStore(master)
    user, password, was_fallback = choose_user(requested_user, store)
    client = new_client(store.master)

    token = store.get_token(user)
    if token is not None:
        client.token = token
        try:
            client.me()
            return Session(client, user)
        except UnauthenticatedError:
            store.drop_user(user)
            client.token = None

    env_user, env_token = os.environ.get("DET_USER"), os.environ.get("DET_USER_TOKEN")
    if env_user and env_token and requested_user in (None, env_user):
        client.token = env_token
        return Session(client, env_user)

    if password is None:
        password = env_password_for(user)
    if password is None:
        password = prompt_password(f"Password for user '{user}': ")
    try:
        result = client.login(user, password)
    except (UnauthenticatedError, ForbiddenError):
        raise CliError(NOT_LOGGED_IN if was_fallback else INVALID_CREDENTIALS) from None
    client.token = result.token
    store.set_token(user, result.token)
    return Session(client, user)


def logout(master: str, requested_user: str | None) -> str | None:
    """Forget and revoke the token of ``requested_user`` (or the chosen user); return who."""
    store = TokenStore(master)
    user, _, _ = choose_user(requested_user, store)
    token = store.get_token(user)
    if token is None:
        return None
    store.drop_user(user)
    client = new_client(store.master, token)
    # An expired token or a master that is gone changes nothing: the token is forgotten.
    with contextlib.suppress(Exception), client:
        client.logout()
    return user


def setup_session(args: argparse.Namespace) -> Session:
    """The session for a parsed command line (``args.master``, ``args.user``)."""
    return login_with_cache(args.master, args.user)
