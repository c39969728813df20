"""llm.data: checksum verification with errors that name the file, decoding and newline normalisation."""

import hashlib
from pathlib import Path

import pytest

from llm.data import DataError, list_files, read_bytes, read_manifest, read_text, verified_path

DATA = Path(__file__).resolve().parents[1] / "data"


def make_root(tmp_path: Path, files: dict[str, bytes], extra_manifest: str = "") -> Path:
    lines = []
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n" + extra_manifest)
    return tmp_path


def test_decoding_drops_bom_and_normalises_newlines(tmp_path):
    root = make_root(tmp_path, {"a.txt": "\ufeffone\r\ntwo\rthree\nfour".encode("utf-8")})
    assert read_text("a.txt", root) == "one\ntwo\nthree\nfour"


def test_missing_file_is_named(tmp_path):
    root = make_root(tmp_path, {}, extra_manifest=f"{'0' * 64}  sub/gone.txt\n")
    with pytest.raises(DataError, match=r"sub/gone\.txt: file not found"):
        read_text("sub/gone.txt", root)


def test_unlisted_file_is_named(tmp_path):
    root = make_root(tmp_path, {"listed.txt": b"x"})
    (root / "stray.txt").write_text("y")
    with pytest.raises(DataError, match=r"stray\.txt: not listed in .*SHA256SUMS"):
        read_bytes("stray.txt", root)


def test_checksum_mismatch_is_named(tmp_path):
    root = make_root(tmp_path, {"book.txt": b"original"})
    (root / "book.txt").write_bytes(b"edited")
    actual = hashlib.sha256(b"edited").hexdigest()
    with pytest.raises(DataError, match=rf"book\.txt: sha256 is {actual}"):
        verified_path("book.txt", root)


def test_malformed_manifest_names_line(tmp_path):
    root = make_root(tmp_path, {"a.txt": b"a"}, extra_manifest="not a checksum line\n")
    with pytest.raises(DataError, match=r"SHA256SUMS:2: expected"):
        read_manifest(root)


def test_missing_manifest(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_text("a.txt", tmp_path)


def test_invalid_utf8_strict_and_replace(tmp_path):
    root = make_root(tmp_path, {"latin.txt": b"costs \xa320"})
    with pytest.raises(DataError, match=r"latin\.txt: not valid UTF-8 at byte 6"):
        read_text("latin.txt", root, errors="strict")
    assert read_text("latin.txt", root) == "costs \ufffd20"


def test_list_files_matches_manifest(tmp_path):
    root = make_root(tmp_path, {"novels/b.txt": b"b", "novels/a.txt": b"a", "other.json": b"{}"})
    assert list_files("novels/*.txt", root) == ["novels/a.txt", "novels/b.txt"]
    assert list_files("*.json", root) == ["other.json"]


def test_every_shipped_data_file_verifies():
    names = list_files("*", DATA)
    assert len(names) >= 20 and "gpt2/vocab.bpe" in names
    for name in names:
        assert verified_path(name, DATA) == DATA / name
    assert len(list_files("gutenberg-novels/*.txt", DATA)) == 15
