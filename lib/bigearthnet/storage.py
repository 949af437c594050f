"""Where inputs and outputs live: local paths or ``s3://bucket/key`` URIs, and the S3 settings.

``--products``, ``--clc``, ``--out`` and ``--dataset`` accept ``s3://bucket/prefix``. This module
is the one place that knows how to talk to an S3-compatible store:

* :class:`S3Uri` parses and joins URIs and spells the same object for each client: a pyarrow
  path (``bucket/key``) and a GDAL path (``/vsis3/bucket/key``);
* :class:`S3Settings` reads the standard AWS environment variables once, on the driver
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for S3-compatible
  servers), travels to the Spark tasks inside their closure, and there builds pyarrow's
  ``S3FileSystem`` and GDAL's ``/vsis3/`` configuration (:meth:`S3Settings.apply`). Unset
  credentials are not invented: pyarrow and GDAL then use their own default chains
  (``~/.aws``, instance roles) on whichever machine they run;
* the few object operations the package needs (list, read, write one object, upload or download
  a folder, delete a prefix), each turning a failed request into a named error that names the
  URI: :class:`~bigearthnet.errors.ObjectStoreAccessError` (credentials, permissions, endpoint),
  :class:`~bigearthnet.errors.BucketNotFoundError`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bigearthnet.errors import (
    BucketNotFoundError,
    ConfigError,
    InputNotFoundError,
    ObjectStoreAccessError,
    ObjectStoreError,
)

S3_SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"


def is_s3_uri(path: object) -> bool:
    """True for an ``s3://`` URI (a string; ``Path`` objects are always local)."""
    return isinstance(path, str) and path.startswith(S3_SCHEME)


@dataclass(frozen=True, order=True)
class S3Uri:
    """An object or prefix in a bucket.

    Args:
        bucket: the bucket name.
        key: the key or prefix, without leading or trailing ``/`` ("" for the bucket root).
    """

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        """Parse ``s3://bucket/key``.

        Raises:
            ConfigError: not an ``s3://`` URI, or no bucket.
        """
        if not is_s3_uri(uri):
            raise ConfigError(f"{uri!r} is not an s3:// URI (expected s3://bucket/prefix)")
        bucket, _, key = uri[len(S3_SCHEME):].partition("/")
        if not bucket:
            raise ConfigError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
        return cls(bucket, key.strip("/"))

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}" if self.key else f"{S3_SCHEME}{self.bucket}"

    def join(self, *parts: str) -> S3Uri:
        """The URI of ``parts`` under this prefix."""
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return S3Uri(self.bucket, f"{self.key}/{tail}".strip("/") if self.key else tail)

    @property
    def name(self) -> str:
        """The last path element."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> S3Uri:
        """The enclosing prefix."""
        return S3Uri(self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    @property
    def path(self) -> str:
        """``bucket/key``, as pyarrow's S3 filesystem names it."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    @property
    def gdal(self) -> str:
        """``/vsis3/bucket/key``, as GDAL (rasterio, pyogrio) opens it."""
        return f"/vsis3/{self.path}"

    def relative(self, path: str) -> str:
        """A pyarrow path under this prefix, relative to it."""
        return path[len(self.path):].lstrip("/")


def gdal_path(path: str | os.PathLike[str]) -> str:
    """The GDAL path of a local path or ``s3://`` URI (``/vsis3/…``)."""
    return S3Uri.parse(path).gdal if is_s3_uri(path) else os.fspath(path)


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True)
class S3Settings:
    """How to reach the object store, read from the standard AWS environment variables.

    Args:
        endpoint_url: ``http(s)://host:port`` of an S3-compatible server (MinIO, SeaweedFS,
            versitygw, Ceph…), or ``None`` for AWS S3.
        region: the region (``us-east-1`` when unset).
        access_key, secret_key, session_token: explicit credentials, or ``None`` to leave them
            to pyarrow's and GDAL's default chains where the code runs.
    """

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """The settings in ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        endpoint = _env(env, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint and "://" not in endpoint:
            endpoint = "https://" + endpoint
        return cls(
            endpoint_url=endpoint.rstrip("/") if endpoint else None,
            region=_env(env, "AWS_REGION", "AWS_DEFAULT_REGION") or DEFAULT_REGION,
            access_key=_env(env, "AWS_ACCESS_KEY_ID"),
            secret_key=_env(env, "AWS_SECRET_ACCESS_KEY"),
            session_token=_env(env, "AWS_SESSION_TOKEN"),
        )

    @property
    def _endpoint(self) -> tuple[str, str] | None:
        if not self.endpoint_url:
            return None
        parts = urlsplit(self.endpoint_url)
        return parts.scheme or "https", parts.netloc or parts.path

    def filesystem(self) -> Any:
        """pyarrow's ``S3FileSystem`` for these settings (one per settings and process)."""
        return _filesystem(self)

    def gdal_config(self) -> dict[str, str]:
        """GDAL's configuration options for ``/vsis3/`` (also read by pyogrio's GDAL)."""
        conf = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                # No directory listing on open: a band file has no sidecar to look for.
                "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
        endpoint = self._endpoint
        if endpoint is not None:
            scheme, host = endpoint
            conf.update(AWS_S3_ENDPOINT=host, AWS_HTTPS="NO" if scheme == "http" else "YES",
                        AWS_VIRTUAL_HOSTING="FALSE")
        for name, value in (("AWS_ACCESS_KEY_ID", self.access_key),
                            ("AWS_SECRET_ACCESS_KEY", self.secret_key),
                            ("AWS_SESSION_TOKEN", self.session_token)):
            if value:
                conf[name] = value
        return conf

    def apply(self) -> None:
        """Make GDAL (rasterio's and pyogrio's) reach the store: set its options in this
        process's environment.

        GDAL reads configuration options it was not given explicitly from the environment, and
        ``rasterio.Env`` refuses AWS credentials as options, so the environment is the one
        channel both libraries honour. Called on the driver and at the start of every task that
        reads ``/vsis3/`` paths; idempotent.
        """
        env = self.gdal_config()
        if self.endpoint_url and not _env(os.environ, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            # an executor without the driver's variables: S3Settings.from_env() finds the store
            env["AWS_ENDPOINT_URL_S3"] = self.endpoint_url
        os.environ.update(env)


@functools.lru_cache(maxsize=8)
def _filesystem(settings: S3Settings) -> Any:
    from pyarrow import fs

    kwargs: dict[str, Any] = {"region": settings.region, "connect_timeout": 10,
                              "request_timeout": 60}
    endpoint = settings._endpoint
    if endpoint is not None:
        kwargs["scheme"], kwargs["endpoint_override"] = endpoint
    if settings.access_key and settings.secret_key:
        kwargs.update(access_key=settings.access_key, secret_key=settings.secret_key,
                      session_token=settings.session_token)
    return fs.S3FileSystem(**kwargs)


def object_error(exc: OSError, uri: S3Uri | str, action: str) -> ObjectStoreError:
    """The named error for a failed request on ``uri`` (pyarrow's ``OSError`` text has the AWS
    error code)."""
    text = str(exc)
    settings = S3Settings.from_env()
    where = f"endpoint {settings.endpoint_url}" if settings.endpoint_url else "AWS S3"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        bucket = S3Uri.parse(str(uri)).bucket
        return BucketNotFoundError(
            f"cannot {action} {uri}: bucket '{bucket}' does not exist on {where}; create it "
            "or fix the URI")
    if any(code in text for code in ("ACCESS_DENIED", "AccessDenied", "SIGNATURE_DOES_NOT_MATCH",
                                     "INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId", "Forbidden",
                                     "403")):
        return ObjectStoreAccessError(
            f"cannot {action} {uri}: access denied by {where} ({_first_line(text)}); check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the role) and the bucket policy")
    if "NETWORK_CONNECTION" in text or "curlCode" in text:
        return ObjectStoreAccessError(
            f"cannot {action} {uri}: {where} cannot be reached ({_first_line(text)}); check "
            "AWS_ENDPOINT_URL and the network")
    return ObjectStoreError(f"cannot {action} {uri}: {_first_line(text)}")


def gdal_remote_error(path: str, exc: Exception, what: str = "") -> ObjectStoreError | None:
    """The named error for GDAL failing to fetch a ``/vsis3/`` (or ``/vsicurl/``) path because
    of the store (credentials, endpoint, network, missing object), or ``None`` when the failure
    is something else (a corrupt file). ``what`` prefixes the message (e.g. the product)."""
    if "/vsis3/" not in path and "/vsicurl/" not in path:
        return None
    text = str(exc)
    if any(s in text for s in ("AWS_SECRET_ACCESS_KEY", "HTTP response code: 403",
                               "HTTP response code: 401", "AccessDenied", "Access Denied",
                               "SignatureDoesNotMatch", "InvalidAccessKeyId",
                               "signature we calculated does not match",
                               "Access Key Id you provided does not exist")):
        return ObjectStoreAccessError(
            f"{what}cannot read {path}: the object store refused access ({_first_line(text)}); check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the role) where the task runs")
    if any(s in text for s in ("CURL error", "Could not resolve host", "Couldn't connect",
                               "Connection refused", "timed out")):
        return ObjectStoreAccessError(
            f"{what}cannot read {path}: the object store cannot be reached ({_first_line(text)}); "
            "check AWS_ENDPOINT_URL and the network")
    if "NoSuchBucket" in text or "does not exist in the file system" in text:
        return ObjectStoreError(f"{what}cannot read {path}: no such object ({_first_line(text)})")
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


class ObjectStore:
    """The object operations of the package on one store.

    Args:
        settings: how to reach it (default: from the environment).
    """

    def __init__(self, settings: S3Settings | None = None):
        self.settings = settings or S3Settings.from_env()
        self.fs = self.settings.filesystem()

    def check_bucket(self, uri: S3Uri) -> None:
        """Raise the named error when the bucket of ``uri`` is missing or not accessible."""
        from pyarrow import fs

        try:
            info = self.fs.get_file_info(uri.bucket)
        except OSError as exc:
            raise object_error(exc, uri, "reach") from None
        if info.type == fs.FileType.NotFound:
            raise object_error(OSError("NO_SUCH_BUCKET"), uri, "reach")

    def info(self, uri: S3Uri) -> Any:
        """pyarrow's ``FileInfo`` of one object (type ``NotFound`` when absent)."""
        try:
            return self.fs.get_file_info(uri.path)
        except OSError as exc:
            raise object_error(exc, uri, "read") from None

    def exists(self, uri: S3Uri) -> bool:
        """True when the object ``uri`` exists."""
        from pyarrow import fs

        return self.info(uri).type == fs.FileType.File

    def list(self, prefix: S3Uri) -> dict[str, int]:
        """Every object under ``prefix``: relative key -> size (empty when there is none).

        Raises:
            BucketNotFoundError, ObjectStoreAccessError: the bucket is missing or not readable.
        """
        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(prefix.path, recursive=True,
                                                          allow_not_found=True))
        except OSError as exc:
            raise object_error(exc, prefix, "list") from None
        return {prefix.relative(i.path): i.size for i in infos if i.type == fs.FileType.File}

    def read_bytes(self, uri: S3Uri) -> bytes:
        """The content of one object.

        Raises:
            InputNotFoundError: no such object.
        """
        try:
            with self.fs.open_input_stream(uri.path) as f:
                return f.read()
        except FileNotFoundError:
            raise InputNotFoundError(f"{uri} does not exist") from None
        except OSError as exc:
            raise object_error(exc, uri, "read") from None

    def write_bytes(self, uri: S3Uri, data: bytes) -> None:
        """Write one object in one request; it appears whole or not at all."""
        try:
            with self.fs.open_output_stream(uri.path) as f:
                f.write(data)
        except OSError as exc:
            raise object_error(exc, uri, "write") from None

    def upload(self, local: Path, uri: S3Uri) -> None:
        """Upload one file (multipart for large ones: the object appears only when complete)."""
        from pyarrow import fs

        try:
            fs.copy_files(str(local), uri.path, destination_filesystem=self.fs)
        except OSError as exc:
            raise object_error(exc, uri, "write") from None

    def download(self, uri: S3Uri, local: Path) -> None:
        """Download one object to ``local`` (its folder must exist)."""
        from pyarrow import fs

        try:
            fs.copy_files(uri.path, str(local), source_filesystem=self.fs)
        except FileNotFoundError:
            raise InputNotFoundError(f"{uri} does not exist") from None
        except OSError as exc:
            raise object_error(exc, uri, "read") from None

    def delete(self, uri: S3Uri) -> None:
        """Delete one object (absent is fine)."""
        try:
            self.fs.delete_file(uri.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise object_error(exc, uri, "delete") from None

    def delete_prefix(self, prefix: S3Uri) -> None:
        """Delete every object under ``prefix``.

        A batch delete first; servers that keep folders as objects (versitygw's posix backend)
        may refuse a folder of the batch while its files are still there, so whatever is left
        is then deleted file by file.
        """
        try:
            self.fs.delete_dir_contents(prefix.path, missing_dir_ok=True)
        except FileNotFoundError:
            return
        except OSError:
            for rel in sorted(self.list(prefix)):
                self.delete(prefix.join(rel))
