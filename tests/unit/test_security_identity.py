"""Identity rules (master.identity): usernames, display names, passwords, LIKE patterns."""

from __future__ import annotations

import pytest

from master import identity


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("admin", "admin"),
        ("Admin", "admin"),
        ("ADMIN", "admin"),
        ("ａｄｍｉｎ", "admin"),  # full-width letters fold to ASCII under NFKC
        ("  alice  ", "alice"),
        ("alice.smith@example.com", "alice.smith@example.com"),
        ("a_b-c.d", "a_b-c.d"),
        ("x" * 128, "x" * 128),
        ("0", "0"),
    ],
)
def test_usernames_take_one_canonical_form(given: str, canonical: str) -> None:
    assert identity.normalize_username(given) == canonical
    assert identity.check_username(given) == canonical


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 129, "too long"),
        ("a b", "' '"),
        ("a\u200bb", "'\\u200b'"),  # zero-width space
        ("a\u202eb", "'\\u202e'"),  # right-to-left override
        ("a\x1b[31mb", "'\\x1b'"),  # ANSI escape
        ("a\x00b", "'\\x00'"),
        ("../x", "'/'"),
        ("a/b", "'/'"),
        ("-admin", "must not start"),
        (".admin", "must not start"),
        ("a\ud800", "'\\ud800'"),  # a lone surrogate
        ("élodie", "'\\xe9'"),
    ],
)
def test_usernames_outside_the_character_set_are_refused(given: str, complaint: str) -> None:
    with pytest.raises(identity.IdentityError) as raised:
        identity.check_username(given, "user.username")
    message = str(raised.value)
    assert message.startswith("user.username: ") and complaint in message
    assert identity.USERNAME_RULE in message


def test_normalize_never_raises_even_on_lone_surrogates() -> None:
    assert identity.normalize_username("\ud800A") == "\ud800a"


@pytest.mark.parametrize("name", [None, "", "Carol C", "Zoë Ångström", "李小龙", "x" * 256])
def test_display_names_allowed(name: str | None) -> None:
    assert identity.check_display_name(name) == name


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("x" * 257, "too long"),
        ("x" * 10_000_000, "too long"),
        ("a\nb", "'\\n'"),
        ("a\x00b", "'\\x00'"),
        ("a\x1b[2Jb", "'\\x1b'"),
        ("a\u200db", "'\\u200d'"),
        ("a\u2066b", "'\\u2066'"),
    ],
)
def test_display_names_refused(name: str, complaint: str) -> None:
    with pytest.raises(identity.IdentityError, match="displayName") as raised:
        identity.check_display_name(name)
    assert complaint in str(raised.value)


@pytest.mark.parametrize("password", ["Passw0rd", "NewPassw0rd!", "Pw12345678", "aB3aB3aB3"])
def test_strong_passwords_pass(password: str) -> None:
    identity.check_password(password)


@pytest.mark.parametrize(
    "password", ["", "Pw1", "password1", "PASSWORD1", "Password", "Pass w0", "aaaaaaaa"]
)
def test_weak_passwords_are_refused_naming_the_rule(password: str) -> None:
    with pytest.raises(identity.IdentityError) as raised:
        identity.check_password(password)
    assert str(raised.value) == f"password: too weak, it needs {identity.PASSWORD_RULE}"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("_", "%\\_%"),
        ("%", "%\\%%"),
        ("a\\b", "%a\\\\b%"),
        ("alice", "%alice%"),
    ],
)
def test_like_patterns_take_wildcards_literally(text: str, pattern: str) -> None:
    assert identity.like_pattern(text) == pattern
