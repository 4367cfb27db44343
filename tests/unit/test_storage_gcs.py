"""GCS specifics against the loopback fake: the JSON API calls, pagination, retries and where
the bearer token comes from."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.experiment_config import GCSStorage
from harness.storage import build_storage, gcs
from harness.storage.gcs import (
    GCSCredentials,
    GCSCredentialsError,
    GCSError,
    GCSStorageManager,
    endpoint_from_env,
)
from tests.fake_gcs import FakeGCSState, fake_gcs

CONFIG = GCSStorage(type="gcs", bucket="ckpt", prefix="exp/3")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_OAUTH_ACCESS_TOKEN", "GCE_METADATA_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeGCSState]]:
    with fake_gcs("ckpt", token="tok") as (endpoint, state):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "tok")
        yield endpoint, state


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_objects_are_named_prefix_uuid_path(fake: tuple[str, FakeGCSState], tmp_path: Path) -> None:
    _endpoint, state = fake
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "c%d.bin").write_bytes(b"12")
    storage = build_storage({"type": "gcs", "bucket": "ckpt", "prefix": "/exp/3/"})
    storage.upload(tmp_path, "u1")
    assert state.names("ckpt") == ["exp/3/u1/a b/c%d.bin"]
    assert isinstance(storage, GCSStorageManager)
    assert storage.location("u1") == "gs://ckpt/exp/3/u1/"
    # The object name travels URL-encoded as one path segment ('/' as %2F).
    storage.download("u1", tmp_path / "dst")
    assert ("GET", "/storage/v1/b/ckpt/o/exp%2F3%2Fu1%2Fa%20b%2Fc%25d.bin?alt=media") in (
        state.requests
    )


def test_listing_follows_page_tokens(fake: tuple[str, FakeGCSState], tmp_path: Path) -> None:
    _endpoint, state = fake
    state.page_size = 2
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
    storage = build_storage(CONFIG)
    storage.upload(tmp_path, "u1")
    state.requests.clear()
    assert storage.files("u1") == {f"f{i}": i for i in range(5)}
    assert len(state.requests) == 3
    assert sum("pageToken=" in path for _method, path in state.requests) == 2


def test_transient_failures_are_retried(fake: tuple[str, FakeGCSState], tmp_path: Path) -> None:
    endpoint, state = fake
    (tmp_path / "f").write_bytes(b"data")
    storage = GCSStorageManager(CONFIG, endpoint=endpoint, backoff=0.001)
    state.fail_next = 2
    storage.upload(tmp_path, "u1")
    state.fail_next = 3
    assert storage.files("u1") == {"f": 4}
    state.fail_next = gcs.RETRIES
    with pytest.raises(GCSError, match="HTTP 503 injected failure"):
        storage.files("u1")


def test_a_wrong_token_is_reported(
    fake: tuple[str, FakeGCSState], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "wrong")
    with pytest.raises(GCSError, match="HTTP 401 missing or wrong bearer token"):
        build_storage(CONFIG).files("u1")


def test_a_missing_bucket_is_reported(fake: tuple[str, FakeGCSState]) -> None:
    storage = build_storage({"type": "gcs", "bucket": "nope"})
    with pytest.raises(GCSError, match="HTTP 404 The specified bucket does not exist"):
        storage.files("u1")


def test_an_emulator_without_credentials_is_used_anonymously(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with fake_gcs("ckpt") as (endpoint, state):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint.removeprefix("http://"))
        (tmp_path / "f").write_bytes(b"x")
        storage = build_storage(CONFIG)
        storage.upload(tmp_path, "u1")
        assert storage.files("u1") == {"f": 1}
        assert state.names("ckpt") == ["exp/3/u1/f"]


def test_endpoint_comes_from_storage_emulator_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint_from_env() == "https://storage.googleapis.com"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:4443")
    assert endpoint_from_env() == "http://localhost:4443"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "https://gcs.example/")
    assert endpoint_from_env() == "https://gcs.example"


def test_token_from_the_metadata_server_without_google_auth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GCSCredentials, "_from_google_auth", lambda self: None)
    with fake_gcs() as (endpoint, state):
        monkeypatch.setenv("GCE_METADATA_HOST", endpoint.removeprefix("http://"))
        credentials = GCSCredentials()
        assert credentials.token() == "metadata-token"
        state.metadata_token = "rotated"
        assert credentials.token() == "metadata-token"  # cached until near expiry
        credentials._expires = 0.0
        assert credentials.token() == "rotated"
        monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "explicit")
        assert credentials.token() == "explicit"


def test_no_credentials_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GCSCredentials, "_from_google_auth", lambda self: None)
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{closed_port()}")
    with pytest.raises(GCSCredentialsError, match="GOOGLE_OAUTH_ACCESS_TOKEN"):
        GCSCredentials().token()


class _FakeGoogleCredentials:
    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry: datetime | None = None
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = f"ga-token-{self.refreshes}"
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)  # naive UTC


def install_fake_google_auth(
    monkeypatch: pytest.MonkeyPatch, credentials: _FakeGoogleCredentials | None
) -> list[list[str]]:
    """A stand-in ``google.auth`` package: ``default()`` hands out ``credentials``, or raises
    DefaultCredentialsError when None. Returns the scopes each ``default()`` call asked for."""
    calls: list[list[str]] = []

    class GoogleAuthError(Exception):
        pass

    class DefaultCredentialsError(GoogleAuthError):
        pass

    def default(scopes: list[str]) -> tuple[_FakeGoogleCredentials, str]:
        calls.append(scopes)
        if credentials is None:
            raise DefaultCredentialsError("none")
        return credentials, "project"

    exceptions = SimpleNamespace(GoogleAuthError=GoogleAuthError)
    requests = SimpleNamespace(Request=object)
    transport = SimpleNamespace(requests=requests)
    auth = SimpleNamespace(default=default, exceptions=exceptions, transport=transport)
    modules = {
        "google": SimpleNamespace(auth=auth),
        "google.auth": auth,
        "google.auth.exceptions": exceptions,
        "google.auth.transport": transport,
        "google.auth.transport.requests": requests,
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_token_from_google_auth_is_refreshed_only_near_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    google_credentials = _FakeGoogleCredentials()
    calls = install_fake_google_auth(monkeypatch, google_credentials)
    credentials = GCSCredentials()
    assert credentials.token() == "ga-token-1"
    assert credentials.token() == "ga-token-1"
    assert calls == [[gcs.SCOPE]]
    credentials._expires = 0.0
    assert credentials.token() == "ga-token-2"
    assert calls == [[gcs.SCOPE]]  # the same credentials object, refreshed


def test_without_application_default_credentials_the_metadata_server_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = install_fake_google_auth(monkeypatch, None)
    with fake_gcs() as (endpoint, _state):
        monkeypatch.setenv("GCE_METADATA_HOST", endpoint.removeprefix("http://"))
        assert GCSCredentials().token() == "metadata-token"
    assert len(calls) == 1
