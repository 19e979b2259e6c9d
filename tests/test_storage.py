import os
import threading
from pathlib import Path

import pytest

from apa import storage


def test_local_roundtrip(tmp_path: Path) -> None:
    target = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(target, b"hello")
    assert storage.exists(target)
    assert storage.read_bytes(target) == b"hello"
    assert storage.parent(target) == str(tmp_path / "a")


def test_missing_local_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "nope.wav"))


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        storage.filesystem("gs://bucket/x")


def test_resolve_relative_refs() -> None:
    assert storage.resolve("/data", "a/b.wav") == "/data/a/b.wav"
    assert storage.resolve("/data", "/abs/b.wav") == "/abs/b.wav"
    assert storage.resolve("s3://bkt/pre/", "x.flac") == "s3://bkt/pre/x.flac"
    assert storage.parent("s3://bkt/pre/m.jsonl") == "s3://bkt/pre"


def test_s3_roundtrip_on_loopback(s3) -> None:
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="dir/obj.bin", Body=b"\x00\x01payload")
    uri = f"s3://{bucket}/dir/obj.bin"
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    storage.write_bytes(f"s3://{bucket}/out/new.bin", b"written")
    assert client.get_object(Bucket=bucket, Key="out/new.bin")["Body"].read() == b"written"
    assert not storage.exists(f"s3://{bucket}/dir/none.bin")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(f"s3://{bucket}/dir/none.bin")


def test_local_write_is_atomic_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "t.bin"
    storage.write_bytes(str(target), b"one")
    storage.write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_bytes_pass_through_unchanged_whatever_the_extension(tmp_path: Path) -> None:
    """pyarrow would gzip a '.gz' path on the fly; storage moves bytes as they are."""
    target = tmp_path / "x.jsonl.gz"
    storage.write_bytes(str(target), b"plain")
    assert target.read_bytes() == b"plain"
    assert storage.read_bytes(str(target)) == b"plain"


def test_read_is_refused_from_the_size_when_over_max_bytes(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"0123456789")
    assert storage.read_bytes(str(target), max_bytes=10) == b"0123456789"
    with pytest.raises(storage.TooLargeError) as info:
        storage.read_bytes(str(target), max_bytes=9)
    assert (info.value.size, info.value.limit) == (10, 9)
    assert isinstance(info.value, OSError)  # callers that refuse a whole input catch OSError


class _Endless:
    """A stream that never ends (``/dev/zero`` behind a regular-looking interface)."""

    def __init__(self) -> None:
        self.served = 0

    def read(self, n: int) -> bytes:
        self.served += n
        return b"\0" * n


@pytest.mark.parametrize("expected", [0, 10, None])
def test_a_read_never_takes_more_than_one_byte_past_the_limit(expected: int | None) -> None:
    """Whatever size the file claimed, the read itself is bounded."""
    stream = _Endless()
    with pytest.raises(storage.TooLargeError) as info:
        storage._read_capped("endless", stream, 5000, expected=expected)
    assert stream.served == 5001 and info.value.size is None
    assert "more than 5,000 bytes" in str(info.value)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: os.mkfifo(p), "a FIFO"),
    ],
)
def test_only_regular_files_are_opened(tmp_path: Path, make, kind: str) -> None:
    target = tmp_path / "special"
    make(target)
    result: list[BaseException] = []

    def read() -> None:
        try:
            storage.read_bytes(str(target), max_bytes=100)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # a writer that comes and goes frees the blocked open
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    (error,) = result
    assert isinstance(error, storage.NotARegularFileError) and isinstance(error, OSError)
    assert f"is {kind}" in str(error)


def test_a_write_whose_partial_file_is_removed_before_its_rename_is_redone(
    tmp_path, monkeypatch
) -> None:
    """A concurrent clean-up (the batch job's recover) may delete a ``.partial-`` file
    between its write and its rename; the write is redone, not failed."""
    import pyarrow.fs as pafs

    from apa import storage

    class RacedFileSystem:
        """The local filesystem, where a clean-up deletes the first partial file just
        before it is renamed."""

        def __init__(self) -> None:
            self.fs, self.moves = pafs.LocalFileSystem(), 0

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src, dest):
            self.moves += 1
            if self.moves == 1:
                self.fs.delete_file(src)
            return self.fs.move(src, dest)

    raced = RacedFileSystem()
    real = storage.filesystem
    monkeypatch.setattr(storage, "filesystem", lambda uri: (raced, real(uri)[1]))
    target = tmp_path / "out" / "x.bin"
    storage.write_bytes(str(target), b"payload")
    assert target.read_bytes() == b"payload" and raced.moves == 2
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]
