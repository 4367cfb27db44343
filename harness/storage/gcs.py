"""Checkpoints in Google Cloud Storage: ``gs://bucket/prefix/<uuid>/…``, over the JSON API.

Four plain HTTP calls (media upload, ``alt=media`` download, paginated list, delete) with httpx
instead of ``google-cloud-storage``, so agents need no Google SDK. ``STORAGE_EMULATOR_HOST``
(the variable Google's own clients honour) points it at an emulator or the test fake.

Credentials, first that works (:class:`GCSCredentials`): the ``GOOGLE_OAUTH_ACCESS_TOKEN``
environment variable (explicit beats ambient, as in boto3's chain); ``google.auth.default()``
when google-auth is installed (service account files, ``gcloud auth application-default``,
workload identity); the GCE metadata server. Against an emulator with none of them, requests
go unauthenticated, as Google's clients do.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from harness.experiment_config import GCSStorage
from harness.storage.base import ObjectStorage

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"
METADATA_HOST_ENV = "GCE_METADATA_HOST"  # google-auth's override of the metadata server
METADATA_HOST = "metadata.google.internal"
METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"

RETRIES = 4
"""Attempts per call: GCS asks clients to retry 429, 5xx and dropped connections with backoff."""
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
REFRESH_MARGIN = 60.0
"""Seconds before expiry at which a cached token is renewed, so no request carries a token
that expires in flight."""


class GCSError(RuntimeError):
    """A GCS call failed for good; the message has the method, URL, status and GCS's reason."""


class GCSCredentialsError(GCSError):
    """No credentials could be found."""


def endpoint_from_env() -> str:
    """``STORAGE_EMULATOR_HOST`` as a base URL (``host:port`` means ``http://host:port``)."""
    host = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if not host:
        return DEFAULT_ENDPOINT
    return host if "://" in host else f"http://{host}"


class GCSCredentials:
    """Bearer tokens for GCS, cached until shortly before they expire; thread-safe."""

    def __init__(self, *, anonymous_ok: bool = False) -> None:
        self.anonymous_ok = anonymous_ok
        self._lock = threading.Lock()
        self._google: Any = None  # google.auth credentials, once found
        self._token: str | None = None
        self._expires = 0.0  # time.monotonic() after which _token must be renewed

    def token(self) -> str | None:
        """A current access token, or None for unauthenticated use of an emulator."""
        explicit = os.environ.get(TOKEN_ENV, "").strip()
        if explicit:
            return explicit
        with self._lock:
            if self._token is not None and time.monotonic() < self._expires:
                return self._token
            if self.anonymous_ok:
                return None
            found = self._from_google_auth() or self._from_metadata_server()
            if found is None:
                raise GCSCredentialsError(
                    "no Google Cloud credentials: set GOOGLE_OAUTH_ACCESS_TOKEN, install "
                    "google-auth with application default credentials, or run on GCE"
                )
            self._token, lifetime = found
            self._expires = time.monotonic() + max(lifetime - REFRESH_MARGIN, 0.0)
            return self._token

    def _from_google_auth(self) -> tuple[str, float] | None:
        try:
            import google.auth
            import google.auth.exceptions
            import google.auth.transport.requests
        except ImportError:
            return None
        try:
            if self._google is None:
                self._google, _project = google.auth.default(scopes=[SCOPE])
            self._google.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.GoogleAuthError:
            return None
        expiry = getattr(self._google, "expiry", None)  # a naive UTC datetime, or None
        if expiry is None:
            return str(self._google.token), 3600.0
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)
        return str(self._google.token), expiry.timestamp() - time.time()

    def _from_metadata_server(self) -> tuple[str, float] | None:
        host = os.environ.get(METADATA_HOST_ENV, METADATA_HOST)
        try:
            answer = httpx.get(
                f"http://{host}{METADATA_TOKEN_PATH}",
                headers={"Metadata-Flavor": "Google"},
                timeout=httpx.Timeout(3.0),
            )
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        body = answer.json()
        return str(body["access_token"]), float(body.get("expires_in", 3600))


class GCSStorageManager(ObjectStorage):
    """The :class:`~harness.storage.StorageManager` for ``type: gcs``."""

    scheme = "gs"

    def __init__(
        self,
        config: GCSStorage,
        *,
        endpoint: str | None = None,
        credentials: GCSCredentials | None = None,
        backoff: float = 0.5,
    ) -> None:
        super().__init__(config.bucket, config.prefix)
        self.endpoint = (endpoint or endpoint_from_env()).rstrip("/")
        emulated = self.endpoint != DEFAULT_ENDPOINT
        self.credentials = credentials or GCSCredentials(anonymous_ok=emulated)
        self.backoff = backoff
        self.http = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0))
        bucket = quote(config.bucket, safe="")
        self._objects_url = f"{self.endpoint}/storage/v1/b/{bucket}/o"
        self._upload_url = f"{self.endpoint}/upload/storage/v1/b/{bucket}/o"

    def close(self) -> None:
        self.http.close()

    def _object_url(self, key: str) -> str:
        return f"{self._objects_url}/{quote(key, safe='')}"

    def _call(
        self, method: str, url: str, send: Callable[[dict[str, str]], httpx.Response]
    ) -> httpx.Response:
        """``send(headers)`` with retries; returns the first response that is not retryable.
        ``send`` is called afresh per attempt so it can reopen files it streams."""
        for attempt in range(RETRIES):
            headers: dict[str, str] = {}
            token = self.credentials.token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = send(headers)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1:
                    raise GCSError(f"{method} {url}: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUS or attempt == RETRIES - 1:
                    return response
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _check(method: str, url: str, response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            reason = response.json()["error"]["message"]
        except Exception:
            reason = response.text[:200]
        raise GCSError(f"{method} {url}: HTTP {response.status_code} {reason}")

    def _put_file(self, path: Path, key: str) -> None:
        def send(headers: dict[str, str]) -> httpx.Response:
            with path.open("rb") as body:
                return self.http.post(
                    self._upload_url,
                    params={"uploadType": "media", "name": key},
                    headers=headers | {"Content-Type": "application/octet-stream"},
                    content=body,
                )

        self._check("POST", self._upload_url, self._call("POST", self._upload_url, send))

    def _get_file(self, key: str, path: Path) -> None:
        url = self._object_url(key)

        def send(headers: dict[str, str]) -> httpx.Response:
            with self.http.stream("GET", url, params={"alt": "media"}, headers=headers) as answer:
                if answer.is_success:
                    with path.open("wb") as out:
                        for chunk in answer.iter_bytes():
                            out.write(chunk)
                else:
                    answer.read()  # keep the error body for _check
                return answer

        self._check("GET", url, self._call("GET", url, send))

    def _list(self, prefix: str) -> Iterator[tuple[str, int]]:
        page_token: str | None = None
        while True:
            params = {"prefix": prefix} | ({"pageToken": page_token} if page_token else {})

            def send(headers: dict[str, str], params: dict[str, str] = params) -> httpx.Response:
                return self.http.get(self._objects_url, params=params, headers=headers)

            response = self._call("GET", self._objects_url, send)
            self._check("GET", self._objects_url, response)
            body = response.json()
            for item in body.get("items", []):
                yield item["name"], int(item["size"])
            page_token = body.get("nextPageToken")
            if not page_token:
                return

    def _delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            url = self._object_url(key)

            def send(headers: dict[str, str], url: str = url) -> httpx.Response:
                return self.http.delete(url, headers=headers)

            response = self._call("DELETE", url, send)
            if response.status_code != 404:  # already gone: fine, delete is idempotent
                self._check("DELETE", url, response)
