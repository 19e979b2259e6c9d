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
