"""Local paths and ``s3://`` URIs behind one small API, on ``pyarrow.fs``.

S3 settings come from the standard AWS environment (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` for an S3-compatible endpoint such as MinIO, ``AWS_REGION``, and the
usual credential variables), so the same deployment settings serve boto3 and pyarrow.
"""

from __future__ import annotations

import functools
import os
import posixpath
import stat
import uuid
from pathlib import Path
from typing import Protocol

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


_CHUNK = 1024 * 1024
"""Read size once the expected size is read (a file that grew, or gave no size)."""


class NotARegularFileError(OSError):
    """The path is a directory, FIFO, device or socket: reading a FIFO blocks until a writer
    comes, a device such as ``/dev/zero`` never ends, so only regular files are read."""


class TooLargeError(OSError):
    """More bytes at ``uri`` than the caller's limit. ``size`` is the size the file or object
    reported, or ``None`` when it reported less and the read found more (a growing file, a
    ``/proc`` file that says 0 bytes)."""

    def __init__(self, uri: str, limit: int, size: int | None) -> None:
        found = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
        super().__init__(f"{uri} is {found}, over the {limit:,}-byte limit")
        self.uri, self.limit, self.size = uri, limit, size


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The whole object or file at ``uri``, which must be a regular file (or an S3 object).

    With ``max_bytes``, the size is checked before reading (``os.stat``, or a HEAD for S3)
    and the read stops one byte past the limit, so neither a large file nor one that lies
    about its size is ever held in memory whole: either way :class:`TooLargeError`.
    Raises ``FileNotFoundError``, :class:`NotARegularFileError` or another ``OSError``.
    """
    fs, path = filesystem(uri)
    if not is_s3(uri):
        return _read_local(uri, path, max_bytes)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no object at {uri}")
    if info.type != pafs.FileType.File:
        raise NotARegularFileError(f"{uri} is a prefix (a directory), not an object")
    _check_size(uri, info.size, max_bytes)
    with fs.open_input_stream(path, compression=None) as stream:
        return _read_capped(uri, stream, max_bytes, expected=info.size)


def _read_local(uri: str, path: str, max_bytes: int | None) -> bytes:
    """Check the file type and size with ``stat`` before opening (opening a FIFO blocks),
    and again on the opened file, in case the path was swapped in between."""
    _check_local(uri, os.stat(path), max_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as stream:
        st = os.fstat(fd)
        _check_local(uri, st, max_bytes)
        return _read_capped(uri, stream, max_bytes, expected=st.st_size)


def _check_local(uri: str, st: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFileError(f"{uri} is {_kind(st.st_mode)}, not a regular file")
    _check_size(uri, st.st_size, max_bytes)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def _check_size(uri: str, size: int | None, max_bytes: int | None) -> None:
    if max_bytes is not None and size is not None and size > max_bytes:
        raise TooLargeError(uri, max_bytes, size)


def _read_capped(
    uri: str, stream: _Readable, max_bytes: int | None, *, expected: int | None
) -> bytes:
    """Read to the end, but never more than ``max_bytes + 1`` bytes: the expected size in
    one read (one allocation of the right size), then in chunks should there be more."""
    cap = None if max_bytes is None else max_bytes + 1
    chunks: list[bytes] = []
    total = 0
    want = (expected or 0) + 1
    while cap is None or total < cap:
        chunk = stream.read(want if cap is None else min(want, cap - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = _CHUNK
    if max_bytes is not None and total > max_bytes:
        raise TooLargeError(uri, max_bytes, None)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
    for attempt in range(_PARTIAL_ATTEMPTS):
        partial = f"{path}.partial-{uuid.uuid4().hex[:8]}"
        try:
            with fs.open_output_stream(partial, compression=None) as stream:
                stream.write(data)
            fs.move(partial, path)
            return
        except FileNotFoundError:
            # The half-written file vanished before its rename: a concurrent clean-up (the
            # batch job's recover removes stray partial files) took it. Write it again.
            if attempt == _PARTIAL_ATTEMPTS - 1:
                raise
        except BaseException:
            if fs.get_file_info(partial).type != pafs.FileType.NotFound:
                fs.delete_file(partial)
            raise


_PARTIAL_ATTEMPTS = 3


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
