"""Local paths and ``s3://`` URIs behind one small API, on ``pyarrow.fs``.

S3 settings come from the standard AWS environment (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` for an S3-compatible endpoint such as MinIO, ``AWS_REGION``, and the
usual credential variables), so the same deployment settings serve boto3 and pyarrow.
"""

from __future__ import annotations

import functools
import posixpath
import uuid
from pathlib import Path

import pyarrow.fs as pafs
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

S3_SCHEME = "s3://"


class S3Settings(BaseSettings):
    """Where S3 is. Credentials are not held here: pyarrow and boto3 read them from the
    environment, an instance profile or a web identity, as usual."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint, e.g. http://127.0.0.1:9000; unset for AWS.",
    )
    region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
    )


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        kwargs["endpoint_override"] = host.rstrip("/") if host else scheme
        kwargs["scheme"] = scheme if host else "https"
    if settings.region:
        kwargs["region"] = settings.region
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``uri`` and the path to pass to it."""
    if is_s3(uri):
        return _s3_filesystem(S3Settings()), uri[len(S3_SCHEME) :]
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}: use a local path or s3://")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def read_bytes(uri: str) -> bytes:
    """The whole object or file at ``uri``. Raises ``FileNotFoundError`` or ``OSError``."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path, compression=None) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` all or nothing, creating parent directories.

    A local file is written beside its target and renamed into place, so a crash never
    leaves a half-written file under the final name; an S3 PUT is atomic already.
    """
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if is_s3(uri):
        with fs.open_output_stream(path, compression=None) as stream:
            stream.write(data)
        return
    partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(partial, compression=None) as stream:
            stream.write(data)
        fs.move(partial, path)
    except BaseException:
        if fs.get_file_info(partial).type != pafs.FileType.NotFound:
            fs.delete_file(partial)
        raise


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def resolve(base_dir: str, ref: str) -> str:
    """Resolve ``ref`` (a path or URI from a manifest) against the manifest's directory.

    Absolute paths and URIs are returned as they are.

    >>> resolve("s3://bucket/corpus", "wav/a.wav")
    's3://bucket/corpus/wav/a.wav'
    >>> resolve("/data/corpus", "s3://other/b.wav")
    's3://other/b.wav'
    """
    if "://" in ref or Path(ref).is_absolute():
        return ref
    if is_s3(base_dir):
        return base_dir.rstrip("/") + "/" + ref
    return str(Path(base_dir) / ref)


def parent(uri: str) -> str:
    """The directory (or prefix) holding ``uri``."""
    if is_s3(uri):
        return uri.rsplit("/", 1)[0]
    return str(Path(uri).expanduser().resolve().parent)
