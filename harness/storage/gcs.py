"""Checkpoints in Google Cloud Storage (``gs://bucket/prefix/<uuid>/…``) via google-cloud-storage.

How GCS behaves, and what the library does about it:

- Uploads of a file up to :data:`RESUMABLE_THRESHOLD` go up in one request; bigger ones use a
  resumable upload session in :data:`CHUNK_SIZE` chunks, so a dropped connection costs one
  chunk, not the file (the library resumes the session from the byte GCS says it has).
- Every transfer is checked end to end with CRC32C (``checksum="crc32c"``): the library sends
  the checksum with the upload and GCS refuses an object whose bytes do not match; a download is
  hashed as it streams and compared with the object's stored hash (``DataCorruption`` if not).
- GCS asks clients to retry 408, 429, 5xx and dropped connections with exponential backoff. The
  library's ``DEFAULT_RETRY`` does that, but it retries uploads only when they are conditional
  (``if_generation_match``), since a blind retry could overwrite a newer object. Checkpoint
  objects are written once per key with the same bytes on every attempt, so retrying them is
  safe: :data:`RETRY` is passed to every call.
- The files of a checkpoint go up and come down in parallel (``transfer_manager`` with a thread
  pool of :data:`MAX_WORKERS`); deletes run on the same pool.

``STORAGE_EMULATOR_HOST`` (which the library itself honours) points the client at an emulator,
where requests go unauthenticated. Credentials otherwise, first that works: the
``GOOGLE_OAUTH_ACCESS_TOKEN`` environment variable (explicit beats ambient, as in boto3's chain),
then Google's application default credentials (a service account key file, ``gcloud auth
application-default login``, workload identity, or the GCE metadata server on an instance).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.experiment_config import GCSStorage
from harness.storage.base import ObjectStorage

try:  # the `gcs` extra; agents checkpointing elsewhere do not need it
    import google.auth
    import google.auth.exceptions
    import google.oauth2.credentials
    from google.api_core import exceptions as api_exceptions
    from google.cloud.storage import Client as StorageClient
    from google.cloud.storage import transfer_manager
    from google.cloud.storage.retry import DEFAULT_RETRY
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"checkpoint_storage type gcs needs google-cloud-storage ({missing}): "
        "pip install 'flotilla[gcs]'"
    ) from missing

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"

RESUMABLE_THRESHOLD = 8 * 1024 * 1024
"""Files from this size on use a resumable upload session (the library's own cut-over)."""
CHUNK_SIZE = 8 * 1024 * 1024
"""Bytes per resumable chunk; GCS requires a multiple of 256 KiB."""
MAX_WORKERS = 8
"""Files transferred, or objects deleted, at once per checkpoint."""
LIST_PAGE_SIZE = 1000
"""Objects per ``objects.list`` page (GCS's maximum); listing follows every page."""
CHECKSUM = "crc32c"
RETRY = DEFAULT_RETRY.with_deadline(300.0)
"""The library's retry policy (408, 429, 5xx, connection errors; exponential backoff with
jitter), applied to uploads too (see the module docstring), giving up after five minutes."""


class GCSError(RuntimeError):
    """A GCS call failed for good; the message has the bucket, the object and GCS's reason."""


class GCSCredentialsError(GCSError):
    """No credentials could be found."""


def emulator_host() -> str | None:
    """``STORAGE_EMULATOR_HOST`` as a base URL (``host:port`` means ``http://host:port``)."""
    host = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def make_client(project: str | None = None) -> Any:
    """A storage client with the credentials described in the module docstring."""
    endpoint = emulator_host()
    token = os.environ.get(TOKEN_ENV, "").strip()
    options = {"api_endpoint": endpoint} if endpoint else None
    if token:
        return StorageClient(
            project=project or "<none>",
            credentials=google.oauth2.credentials.Credentials(token),
            client_options=options,
        )
    if endpoint:
        # The library uses anonymous credentials against an emulator it finds in the environment.
        return StorageClient(project=project or "<none>", client_options=options)
    try:
        credentials, found_project = google.auth.default(scopes=[SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise GCSCredentialsError(
            "no Google Cloud credentials for checkpoint_storage type gcs: set "
            f"{TOKEN_ENV}, configure application default credentials "
            f"(GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`), "
            f"or run on a GCE instance with a service account ({exc})"
        ) from exc
    return StorageClient(project=project or found_project or "<none>", credentials=credentials)


class GCSStorageManager(ObjectStorage):
    """The :class:`~harness.storage.StorageManager` for ``type: gcs``.

    Failures the library gives up on are raised as :class:`GCSError` naming the bucket and
    object; a checksum mismatch on download is ``google.resumable_media.DataCorruption``'s
    message inside a GCSError, and the partial file is removed by the library."""

    scheme = "gs"

    def __init__(self, config: GCSStorage, client: Any | None = None) -> None:
        super().__init__(config.bucket, config.prefix)
        self.client = client if client is not None else make_client()
        self.bucket_handle = self.client.bucket(config.bucket)

    def close(self) -> None:
        self.client.close()

    def _blob(self, key: str, size: int = 0) -> Any:
        chunk = CHUNK_SIZE if size >= RESUMABLE_THRESHOLD else None
        return self.bucket_handle.blob(key, chunk_size=chunk)

    def _failed(self, doing: str, key: str, exc: BaseException) -> GCSError:
        reason = getattr(exc, "message", None) or str(exc)
        code = getattr(exc, "code", None)
        status = f"HTTP {code} " if code else ""
        return GCSError(f"{doing} gs://{self.bucket}/{key}: {status}{reason}")

    # ---- the primitives, one file at a time -------------------------------------------------

    def _put_file(self, path: Path, key: str) -> None:
        self._put_files([(path, key)])

    def _get_file(self, key: str, path: Path) -> None:
        self._get_files([(key, path)])

    def _list(self, prefix: str) -> Iterator[tuple[str, int]]:
        try:
            for blob in self.client.list_blobs(
                self.bucket, prefix=prefix, page_size=LIST_PAGE_SIZE, retry=RETRY
            ):
                yield blob.name, int(blob.size or 0)
        except api_exceptions.GoogleAPICallError as exc:
            raise self._failed("listing", prefix, exc) from exc

    def _delete_keys(self, keys: list[str]) -> None:
        def delete(key: str) -> None:
            try:
                self.bucket_handle.blob(key).delete(retry=RETRY)
            except api_exceptions.NotFound:
                pass  # already gone: fine, delete is idempotent
            except api_exceptions.GoogleAPICallError as exc:
                raise self._failed("deleting", key, exc) from exc

        with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
            for _ in pool.map(delete, keys):
                pass

    # ---- whole checkpoints, in parallel -----------------------------------------------------

    def _put_files(self, pairs: list[tuple[Path, str]]) -> None:
        if not pairs:
            return
        results = transfer_manager.upload_many(
            [(str(path), self._blob(key, path.stat().st_size)) for path, key in pairs],
            upload_kwargs={"checksum": CHECKSUM, "retry": RETRY},
            worker_type=transfer_manager.THREAD,
            max_workers=MAX_WORKERS,
        )
        for result, (path, key) in zip(results, pairs, strict=True):
            if isinstance(result, BaseException):
                raise self._failed(f"uploading {path} to", key, result) from result

    def _get_files(self, pairs: list[tuple[str, Path]]) -> None:
        if not pairs:
            return
        results = transfer_manager.download_many(
            [(self.bucket_handle.blob(key), str(path)) for key, path in pairs],
            download_kwargs={"checksum": CHECKSUM, "retry": RETRY},
            worker_type=transfer_manager.THREAD,
            max_workers=MAX_WORKERS,
        )
        for result, (key, path) in zip(results, pairs, strict=True):
            if isinstance(result, BaseException):
                raise self._failed(f"downloading to {path} from", key, result) from result
