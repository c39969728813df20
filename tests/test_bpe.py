"""llm.bpe: both trainers agree, encoding round-trips, files round-trip or fail precisely,
GPT-2 matches tiktoken on every novel, and the tiktoken export matches our encoder."""

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from llm.bpe import (
    BPEFormatError,
    BPETokenizer,
    gpt2_byte_alphabet,
    gpt2_tiktoken,
    load_bpe,
    load_gpt2,
    merge_pair,
    save_bpe,
    train_bpe,
    train_bpe_textbook,
)
from llm.data import list_files, read_text
from llm.tokenizers import EOT

DATA = Path(__file__).resolve().parents[1] / "data"
NOVELS = list_files("gutenberg-novels/*.txt", DATA)


def random_text(seed: int, length: int = 600) -> str:
    """Text from a tiny alphabet, so ties between pair counts and repeated tokens are frequent."""
    rng = random.Random(seed)
    alphabet = rng.choice(["ab ", "abc \n", "aab.,  ", "xyzé ", "ab'sl 1"])
    return "".join(rng.choice(alphabet) for _ in range(length))


@pytest.fixture(scope="module")
def verdict() -> str:
    return read_text("the-verdict.txt", DATA)


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    text = EOT.join(read_text(name, DATA)[:300_000] for name in NOVELS[:4])
    return train_bpe(text, vocab_size=1500)


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    return load_gpt2(DATA)


def test_merge_pair_is_left_to_right_and_non_overlapping():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]
    assert merge_pair([], (1, 2), 9) == []


@pytest.mark.parametrize("seed", range(40))
def test_fast_trainer_learns_the_textbook_merges(seed):
    text = random_text(seed)
    vocab_size = 257 + random.Random(seed).randrange(5, 80)
    fast, textbook = train_bpe(text, vocab_size), train_bpe_textbook(text, vocab_size)
    assert fast.merges == textbook.merges
    assert fast.vocab_size <= vocab_size


def test_fast_trainer_on_prose(verdict):
    fast, textbook = train_bpe(verdict, 420), train_bpe_textbook(verdict, 420)
    assert fast.merges == textbook.merges and fast.vocab_size == 420
    assert len(set(fast.vocab)) == len(fast.vocab)


def test_training_stops_when_nothing_is_left_to_merge():
    tok = train_bpe("ab ab ab", vocab_size=1000)
    assert {tok.vocab[i] for i in range(256, len(tok.vocab))} >= {b"ab", b" ab"}
    assert tok.vocab_size < 1000
    assert train_bpe("anything", vocab_size=200).merges == []


def test_specials_are_never_merged_across():
    tok = train_bpe(f"ab{EOT}ab{EOT}ab{EOT}", vocab_size=300)
    assert all(b"<|" not in token for token in tok.vocab)


@pytest.mark.parametrize("seed", range(10))
def test_round_trip(trained, seed):
    rng = random.Random(seed)
    pieces = ["the ", "Ωμέγα", "🙂", "\n\n", "  ", "\t", "naïve", "'s", "123", "—", "\x00", "<|", EOT]
    text = "".join(rng.choice(pieces) for _ in range(200))
    assert trained.decode(trained.encode(text)) == text
    assert trained.decode(trained.encode(text, allowed_special="all")) == text


def test_special_tokens(trained):
    eot = trained.special_ids[EOT]
    assert eot == trained.vocab_size - 1 == len(trained.vocab)
    assert trained.encode(f"a{EOT}b", allowed_special="all") == [*trained.encode("a"), eot, *trained.encode("b")]
    assert eot not in trained.encode(f"a{EOT}b")  # not allowed: encoded as ordinary text
    assert trained.encode(EOT, allowed_special={EOT}) == [eot]
    with pytest.raises(ValueError, match="unknown special"):
        trained.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        trained.decode([trained.vocab_size])


def test_truncated_merges_give_smaller_vocabularies(trained):
    small = BPETokenizer(trained.merges[:100])
    assert small.vocab_size == 256 + 100 + 1 and small.vocab == trained.vocab[:356]
    text = "It was a truth universally acknowledged."
    assert len(small.encode(text)) >= len(trained.encode(text))


def test_tiktoken_export_matches_our_encoder(trained, verdict):
    exported = trained.to_tiktoken()
    held_out = read_text(NOVELS[-1], DATA)  # not among the training novels of the fixture
    for text in [held_out, verdict, *(random_text(seed, 2000) for seed in range(10)), f"x{EOT}y"]:
        assert exported.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all")
        assert exported.encode_ordinary(text) == trained.encode_ordinary(text)


def test_save_load_round_trip(trained, gpt2, tmp_path):
    for tok in [trained, gpt2]:
        path = tmp_path / "tok.bpe"
        save_bpe(tok, path)
        loaded = load_bpe(path)
        assert (loaded.merges, loaded.specials, loaded.pattern, loaded.byte_order) == (
            tok.merges, tok.specials, tok.pattern, tok.byte_order)
        assert loaded.vocab == tok.vocab


def write_damaged(tmp_path: Path, tok: BPETokenizer, line_number: int, new_line: str | None) -> Path:
    path = tmp_path / "damaged.bpe"
    save_bpe(tok, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if new_line is None:
        del lines[line_number - 1]
    else:
        lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "line_number, new_line, message",
    [
        (1, "gpt-bpe v9", "expected the header"),
        (2, "pattern not-json", "expected a JSON string"),
        (2, 'pattern "(unclosed"', "invalid regular expression"),
        (3, "special 42", "expected a JSON string"),
        (4, "bytes 0 1 2", "each byte value 0-255 exactly once"),
        (4, None, "'merge' before the 'bytes' line"),
        (6, "merge 104", "expected 'merge <left id> <right id>'"),
        (6, "merge 104 x", "expected 'merge <left id> <right id>'"),
        (6, "merge 9999 1", "does not exist yet"),
        (7, "merge 32 116", "recreates the existing token"),
        (8, "vocab 1 2", "unknown line"),
        (8, 'special "<|late|>"', "must come before"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, trained, line_number, new_line, message):
    path = write_damaged(tmp_path, trained, line_number, new_line)
    with pytest.raises(BPEFormatError) as error:
        load_bpe(path)
    assert str(error.value).startswith(f"{path}:{line_number}: ")  # a deleted line: the one now in its place
    assert message in str(error.value)


def test_gpt2_byte_alphabet_is_printable_and_reversible():
    alphabet = gpt2_byte_alphabet()
    assert sorted(alphabet) == list(range(256)) and len(set(alphabet.values())) == 256
    assert all(char.isprintable() and not char.isspace() for char in alphabet.values())
    assert alphabet[ord(" ")] == "Ġ" and alphabet[ord("A")] == "A"


def test_gpt2_matches_tiktoken_on_every_novel(gpt2):
    reference = gpt2_tiktoken(DATA)
    assert gpt2.vocab_size == reference.n_vocab == 50257
    for name in NOVELS:
        text = read_text(name, DATA)
        ours = gpt2.encode_ordinary(text)
        assert ours == reference.encode_ordinary(text), name
        assert gpt2.decode(ours) == text
    assert gpt2.encode(f"end{EOT}", allowed_special="all") == reference.encode(f"end{EOT}", allowed_special="all")


def test_gpt2_loader_reports_bad_merge_line(tmp_path):
    root = tmp_path / "data"
    (root / "gpt2").mkdir(parents=True)
    shutil.copy(DATA / "gpt2" / "encoder.json", root / "gpt2" / "encoder.json")
    lines = (DATA / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    lines[5] = "Ġthe"  # one half missing
    (root / "gpt2" / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = [
        f"{hashlib.sha256((root / 'gpt2' / name).read_bytes()).hexdigest()}  gpt2/{name}"
        for name in ["encoder.json", "vocab.bpe"]
    ]
    (root / "SHA256SUMS").write_text("\n".join(manifest) + "\n")
    with pytest.raises(BPEFormatError, match=r"vocab\.bpe:6: expected two known tokens"):
        load_gpt2(root)


def test_gpt2_loader_checks_encoder_against_merges(tmp_path):
    root = tmp_path / "data"
    (root / "gpt2").mkdir(parents=True)
    shutil.copy(DATA / "gpt2" / "vocab.bpe", root / "gpt2" / "vocab.bpe")
    encoder = json.loads((DATA / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    encoder["Ġthe"], encoder["Ġand"] = encoder["Ġand"], encoder["Ġthe"]
    (root / "gpt2" / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    manifest = [
        f"{hashlib.sha256((root / 'gpt2' / name).read_bytes()).hexdigest()}  gpt2/{name}"
        for name in ["encoder.json", "vocab.bpe"]
    ]
    (root / "SHA256SUMS").write_text("\n".join(manifest) + "\n")
    with pytest.raises(BPEFormatError, match="encoder.json: token"):
        load_gpt2(root)
