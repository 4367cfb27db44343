"""Rules for usernames, display names and passwords (pure functions, no database).

- **Usernames** are NFKC-normalised and lower-cased (:func:`normalize_username`): that canonical
  form is what the database stores and what every lookup (login included) must compare, so
  ``Admin``, ``ADMIN`` and full-width ``ａｄｍｉｎ`` are all ``admin``. Allowed: 1–128 of ASCII
  letters, digits, ``.``, ``_``, ``-`` and ``@``, not starting with ``.`` or ``-``. That
  excludes whitespace, control, zero-width and bidi characters, ANSI escapes, NUL and ``/``.
- **Display names**: at most 256 characters, no control or format characters (that covers
  NUL, ANSI escapes, zero-width and bidi controls); ordinary spaces and letters of any script
  are fine.
- **Passwords** set after creation as plain text follow Determined's CLI rules: at least 8
  characters with an upper-case letter, a lower-case letter and a digit. A password sent
  already salted and hashed (``isHashed: true``, what Determined's CLI sends) cannot be checked
  by the master; the CLI checks it before hashing.

Each check raises :class:`IdentityError` whose message names the field and the rule.
"""

from __future__ import annotations

import re
import unicodedata

USERNAME_MAX = 128
DISPLAY_NAME_MAX = 256
PASSWORD_MIN = 8
USERNAME_RULE = (
    f"1–{USERNAME_MAX} characters from ASCII letters, digits, '.', '_', '-' and '@', "
    "not starting with '.' or '-'"
)
PASSWORD_RULE = (
    f"at least {PASSWORD_MIN} characters, with an upper-case letter, a lower-case letter "
    "and a digit"
)
_USERNAME = re.compile(r"[a-z0-9_@][a-z0-9._@-]*")


class IdentityError(ValueError):
    """A name or password broke a rule; the message says which field and what is allowed."""


def normalize_username(username: str) -> str:
    """The canonical form of a username: NFKC, lower case, surrounding whitespace removed.
    Total: it never raises (lone surrogates pass through unchanged and fail
    :func:`check_username`), so lookups can call it on anything."""
    return unicodedata.normalize("NFKC", username).strip().lower()


def check_username(username: str, field: str = "username") -> str:
    """The canonical username, or :class:`IdentityError` naming ``field`` and the rule."""
    canonical = normalize_username(username)
    if not canonical:
        raise IdentityError(f"{field}: must not be empty ({USERNAME_RULE})")
    if len(canonical) > USERNAME_MAX:
        raise IdentityError(f"{field}: {len(canonical)} characters is too long ({USERNAME_RULE})")
    if not _USERNAME.fullmatch(canonical):
        bad = next((c for c in canonical if not re.fullmatch(r"[a-z0-9._@-]", c)), None)
        what = f"character {bad!a} is not allowed" if bad else "must not start so"
        raise IdentityError(f"{field}: {what} ({USERNAME_RULE})")
    return canonical


def check_display_name(name: str | None, field: str = "displayName") -> str | None:
    """``name`` unchanged if it is allowed (None and "" mean no display name)."""
    if name is None:
        return None
    if len(name) > DISPLAY_NAME_MAX:
        raise IdentityError(
            f"{field}: {len(name)} characters is too long (at most {DISPLAY_NAME_MAX})"
        )
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise IdentityError(
                f"{field}: character {char!a} is not allowed (no control, format, "
                "zero-width or bidi characters)"
            )
    return name


def check_password(password: str, field: str = "password") -> None:
    """Determined's CLI policy for a plain-text password, or :class:`IdentityError`."""
    if (
        len(password) < PASSWORD_MIN
        or not any(c.isupper() for c in password)
        or not any(c.islower() for c in password)
        or not any(c.isdigit() for c in password)
    ):
        raise IdentityError(f"{field}: too weak, it needs {PASSWORD_RULE}")


def like_pattern(text: str, escape: str = "\\") -> str:
    """A ``LIKE`` pattern matching ``text`` anywhere, with ``%``, ``_`` and the escape character
    taken literally (use with ``escape=escape``)."""
    escaped = text.replace(escape, escape * 2).replace("%", escape + "%").replace("_", escape + "_")
    return f"%{escaped}%"
