"""The local model cache: ``APA_CACHE_DIR``, by default ``~/.cache/apa``.

Layout::

    <root>/s3/<readable-name>-<hash>/     every object under one s3:// prefix
    <root>/builtin/<name>-r<recipe>/      the built-in tiny models (apa.models.builtin)

Entries are made atomically: written into a hidden temporary directory beside the final
one, marked complete (a marker file written last), then renamed into place. A directory
under its final name with its marker is therefore always whole, and an interrupted fetch
leaves only a ``.tmp-*`` directory behind. Processes that fetch the same URI at once each
download it and the first rename wins; the others discard their copy.

An S3 entry is keyed by its URI alone: objects changed later under the same prefix are not
noticed. Publish each model version under its own prefix (or delete the entry).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs

from apa.log import get_logger
from apa.storage import S3_SCHEME, filesystem, is_s3

CACHE_ENV = "APA_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/apa"
S3_MARKER = ".apa_fetch_complete.json"
"""Written last into a fetched S3 entry; its presence means the copy is whole."""

_COPY_CHUNK = 16 * 1024 * 1024
_MAX_THREADS = 8

log = get_logger(__name__)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir`` if given, else ``$APA_CACHE_DIR``, else
    ``~/.cache/apa``. Not created here."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser().resolve()


def s3_entry_name(uri: str) -> str:
    """The cache entry for an ``s3://`` prefix: a readable tail of the URI and a hash of all
    of it (``s3://b/models/qwen/`` → ``b-models-qwen-1a2b3c4d5e6f``)."""
    normalized = _normalize_s3_uri(uri)
    digest = hashlib.sha256(normalized.encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._]+", "-", normalized[len(S3_SCHEME) :]).strip("-.")
    return f"{readable[-60:].lstrip('-.')}-{digest}"


def fetch_s3_dir(uri: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local copy of every object under the ``s3://`` prefix ``uri``, downloaded on the
    first call and reused after.

    Uses :func:`apa.storage.filesystem`, so the endpoint, region and credentials are the
    ones the rest of apa uses (``AWS_ENDPOINT_URL`` etc.).

    Raises ``ValueError`` for a URI that is not ``s3://bucket/...``, ``FileNotFoundError``
    when nothing is stored under the prefix, and ``OSError`` when S3 fails.
    """
    normalized = _normalize_s3_uri(uri)
    final = cache_root(cache_dir) / "s3" / s3_entry_name(normalized)
    if is_complete(final, S3_MARKER):
        return final

    def download(tmp: Path) -> None:
        files, total = _download_prefix(normalized, tmp)
        marker = {
            "uri": normalized,
            "files": files,
            "bytes": total,
            "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (tmp / S3_MARKER).write_text(json.dumps(marker, indent=2) + "\n")

    log.info("model_cache.fetch", uri=normalized, to=str(final))
    return build_atomically(final, download, marker=S3_MARKER)


def is_complete(entry: Path, marker: str) -> bool:
    """Whether ``entry`` is a finished cache entry (a directory holding ``marker``)."""
    return (entry / marker).is_file()


def build_atomically(final: Path, build: Callable[[Path], None], *, marker: str) -> Path:
    """Make the cache entry ``final`` by calling ``build(tmp)`` on a fresh temporary
    directory, which must write ``marker`` last, then renaming it into place.

    If another process finished the same entry first, its copy is kept and ours dropped.
    A directory under the final name without the marker (left by something other than
    this function) is replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        if not is_complete(tmp, marker):
            raise RuntimeError(f"building {final} did not write its marker {marker}")
        if final.exists() and not is_complete(final, marker):
            shutil.rmtree(final)
        try:
            tmp.rename(final)
        except OSError:
            if not is_complete(final, marker):
                raise
            # Another process won the race; use its copy.
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _normalize_s3_uri(uri: str) -> str:
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    normalized = uri.rstrip("/")
    bucket = normalized[len(S3_SCHEME) :].split("/", 1)[0]
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}: expected s3://bucket/prefix")
    return normalized


def _download_prefix(uri: str, dest: Path) -> tuple[int, int]:
    """Copy every object under ``uri`` into ``dest``, keeping relative paths. Returns the
    number of files and bytes."""
    fs, base = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        raise FileNotFoundError(f"nothing stored under {uri}") from None
    files = [info for info in infos if info.type == pafs.FileType.File]
    if not files:
        raise FileNotFoundError(f"nothing stored under {uri}")
    jobs: list[tuple[str, Path]] = []
    for info in files:
        rel = posixpath.relpath(info.path, base)
        if rel.startswith("..") or posixpath.isabs(rel):
            raise ValueError(f"object {info.path!r} is not under {uri}")
        jobs.append((info.path, dest.joinpath(*rel.split("/"))))

    def copy(job: tuple[str, Path]) -> None:
        source, target = job
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(source, compression=None) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)

    with ThreadPoolExecutor(max_workers=min(_MAX_THREADS, len(jobs))) as pool:
        list(pool.map(copy, jobs))
    return len(files), sum(info.size or 0 for info in files)
