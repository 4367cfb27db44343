"""``det user``: log in and out, and manage accounts (Determined's verbs and output)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cli import render
from cli.errors import CliError
from cli.parser import add_group, add_output_args, add_verb, string_to_bool
from cli.session import (
    INVALID_CREDENTIALS,
    TokenStore,
    env_password_for,
    logout,
    new_client,
    prompt_password,
    setup_session,
)
from harness.client import ForbiddenError, MasterClient, UnauthenticatedError, salted_password

if TYPE_CHECKING:
    from cli.parser import SubParsers

USERS_PAGE_LIMIT = 100
USER_HEADERS = [
    "User Id",
    "Username",
    "Display Name",
    "Admin",
    "Active",
    "Remote",
    "Agent Uid",
    "Agent Gid",
    "Agent User",
    "Agent Group",
]
# The keys of a user's ``agentUserGroup`` behind Determined's last four columns.
AGENT_USER_GROUP_KEYS = ("agentUid", "agentGid", "agentUser", "agentGroup")


def password_complexity_problems(password: str | None) -> list[str]:
    """Determined's checklist (``check_password_complexity``); empty when the password passes."""
    rules = [
        (bool(password), "password cannot be blank"),
        (bool(password) and len(password or "") >= 8, "password must have at least 8 characters"),
        (bool(re.search(r"[A-Z]", password or "")), "password must include an uppercase letter"),
        (bool(re.search(r"[a-z]", password or "")), "password must include a lowercase letter"),
        (bool(re.search(r"\d", password or "")), "password must include a number"),
    ]
    if all(ok for ok, _ in rules):
        return []
    return [("\u2713 " if ok else "\u2717 ") + text for ok, text in rules]


def warn_if_weak(password: str) -> None:
    problems = password_complexity_problems(password)
    if problems:
        print(
            "Warning: your password does not appear to satisfy recommended complexity "
            "requirements:\n" + "\n".join(problems) + "\n"
            "Please change your password as soon as possible.",
            file=sys.stderr,
        )


def require_strong(password: str) -> None:
    problems = password_complexity_problems(password)
    if problems:
        raise CliError(
            "the password is too weak: " + "; ".join(p[2:] for p in problems if "\u2717" in p)
        )


def iter_users(client: MasterClient) -> Iterator[dict[str, Any]]:
    """Every user, page by page (``GET /api/v1/users?offset=&limit=``)."""
    offset = 0
    while True:
        page = client.get("/api/v1/users", {"offset": offset, "limit": USERS_PAGE_LIMIT})
        users = page.get("users") or []
        yield from users
        total = (page.get("pagination") or {}).get("total")
        offset += len(users)
        if not users or total is None or offset >= int(total):
            return


def find_user(client: MasterClient, username: str) -> dict[str, Any]:
    for user in iter_users(client):
        if user.get("username") == username:
            return user
    raise CliError(f"user '{username}' not found")


def _na(value: Any) -> Any:
    return "N/A" if value is None else value


def list_users(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    users = [u for u in iter_users(sess.client) if args.all or u.get("active", True)]
    if args.json:
        render.print_json(users)
        return
    rows = [
        [
            _na(u.get("id")),
            _na(u.get("username")),
            _na(u.get("displayName")),
            _na(u.get("admin")),
            _na(u.get("active")),
            _na(u.get("remote", False)),
            *(_na((u.get("agentUserGroup") or {}).get(k)) for k in AGENT_USER_GROUP_KEYS),
        ]
        for u in users
    ]
    render.print_table(USER_HEADERS, rows)


def log_in_user(args: argparse.Namespace) -> None:
    username = args.username
    if username is None:
        try:
            username = input("Username: ").strip()
        except EOFError:
            raise CliError("no username given") from None
    password = env_password_for(username)
    if password is None:
        password = prompt_password(f"Password for user '{username}': ")
    store = TokenStore(args.master)
    with new_client(store.master) as client:
        try:
            result = client.login(username, password)
        except (UnauthenticatedError, ForbiddenError):
            raise CliError(f"Failed to log in: {INVALID_CREDENTIALS}") from None
    warn_if_weak(password)
    store.set_token(username, result.token)
    store.set_active(username)


def log_out_user(args: argparse.Namespace) -> None:
    store = TokenStore(args.master)
    if args.all:
        for user in store.get_all_users():
            logout(args.master, user)
        store.clear_active()
        return
    logged_out = logout(args.master, args.user)
    if logged_out and store.get_active_user() == logged_out:
        store.clear_active()


def whoami(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    me = sess.client.me()
    print(f"You are logged in as user '{me.get('username', sess.username)}'")


NEW_PASSWORD_HOW = "pass --password, or write the password as one line to stdin"


def new_password(prompt: str, given: str | None) -> str:
    """``--password``; else, on a terminal, a prompt and a confirmation; else one line of stdin
    (``echo "$PW" | det user create alice``), with no confirmation to read."""
    if given is not None:
        return given
    password = prompt_password(prompt, NEW_PASSWORD_HOW)
    if sys.stdin.isatty() and password != prompt_password("Confirm password: ", NEW_PASSWORD_HOW):
        raise CliError("Passwords do not match")
    return password


def create_user(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    password = new_password(f"Password for user '{args.username}': ", args.password)
    require_strong(password)
    body = {
        "user": {"username": args.username, "admin": bool(args.admin), "active": True},
        "password": salted_password(password),
        "isHashed": True,
    }
    sess.client.post("/api/v1/users", body)


def change_password(args: argparse.Namespace) -> None:
    sess = setup_session(args)
    username = args.target_user or args.user or sess.username
    password = new_password(f"New password for user '{username}': ", args.password)
    require_strong(password)
    user = find_user(sess.client, username)
    body = {"password": salted_password(password), "isHashed": True}
    sess.client.post(f"/api/v1/users/{user['id']}/password", body)
    if args.target_user is None:
        # Changing one's own password revokes nothing here, but log in afresh like Determined
        # so the cached token belongs to the new password.
        store = TokenStore(args.master)
        result = sess.client.login(username, password)
        store.set_token(username, result.token)
        store.set_active(username)


def _patch_user(args: argparse.Namespace, username: str, patch: dict[str, Any]) -> None:
    sess = setup_session(args)
    user = find_user(sess.client, username)
    sess.client.patch(f"/api/v1/users/{user['id']}", patch)


def activate_user(args: argparse.Namespace) -> None:
    _patch_user(args, args.username, {"active": True})


def deactivate_user(args: argparse.Namespace) -> None:
    _patch_user(args, args.username, {"active": False})


def edit_user(args: argparse.Namespace) -> None:
    fields = [
        ("displayName", args.display_name, "Display Name"),
        ("active", args.activate, "Active"),
        ("username", args.username, "Username"),
        ("admin", args.admin, "Admin"),
    ]
    patch = {key: value for key, value, _ in fields if value is not None}
    if not patch:
        raise CliError("No field provided. Use 'det user edit -h' for usage.")
    _patch_user(args, args.target_user, patch)
    changed = [label for _, value, label in fields if value is not None]
    print("Changes made to the following fields: " + ", ".join(changed))


def rename_user(args: argparse.Namespace) -> None:
    _patch_user(args, args.target_user, {"username": args.new_username})
    print(f"Renamed user '{args.target_user}' to '{args.new_username}'")


def _add_session_verbs(verbs: SubParsers) -> None:
    """``login``, ``logout`` and ``whoami``: under ``det user`` and ``det auth`` alike."""
    p = add_verb(verbs, "login", log_in_user, "log in user")
    p.add_argument("username", nargs="?", default=None, help="name of user to log in as")

    p = add_verb(verbs, "logout", log_out_user, "log out user")
    p.add_argument(
        "--all", "-a", action="store_true", help="log out of all cached sessions for this master"
    )

    add_verb(verbs, "whoami", whoami, "print the active user")


def register(nouns: SubParsers) -> None:
    _, auth_verbs = add_group(nouns, "auth", "log in, log out, show who is logged in")
    _add_session_verbs(auth_verbs)

    noun, verbs = add_group(nouns, "u|ser", "manage users")

    p = add_verb(verbs, "list ls", list_users, "list users", default_for=noun)
    p.add_argument("--all", "-a", action="store_true", help="list active and inactive users")
    add_output_args(p, csv=False)

    _add_session_verbs(verbs)

    p = add_verb(verbs, "create", create_user, "create user")
    p.add_argument("username", help="name of new user")
    p.add_argument("--admin", action="store_true", help="give new user admin rights")
    p.add_argument(
        "--password",
        help="password of new user (else prompted for on a terminal, or read from stdin)",
    )

    p = add_verb(verbs, "change-password", change_password, "change password for user")
    p.add_argument(
        "target_user", nargs="?", default=None, help="name of user to change password of"
    )
    p.add_argument(
        "--password",
        help="the new password (else prompted for on a terminal, or read from stdin)",
    )

    p = add_verb(verbs, "rename", rename_user, "change username for user")
    p.add_argument("target_user", help="name of user whose username should be changed")
    p.add_argument("new_username", help="new username for target_user")

    p = add_verb(verbs, "activate", activate_user, "activate user")
    p.add_argument("username", help="name of user to activate")

    p = add_verb(verbs, "deactivate", deactivate_user, "deactivate user")
    p.add_argument("username", help="name of user to deactivate")

    p = add_verb(verbs, "edit", edit_user, "edit user fields")
    p.add_argument("target_user", help="name of user that should be edited")
    p.add_argument("--display-name", default=None, help="new display name for target_user")
    p.add_argument("--username", default=None, help="new username for target_user")
    p.add_argument(
        "--active",
        dest="activate",
        type=string_to_bool,
        metavar="(true|false)",
        default=None,
        help="set user as active/inactive",
    )
    p.add_argument(
        "--admin",
        type=string_to_bool,
        metavar="(true|false)",
        default=None,
        help="grant/remove user admin permissions",
    )
