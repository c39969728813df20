"""llm.tokenizers: word and character tokenizers, special tokens and unknown handling."""

import pytest

from llm.tokenizers import EOT, UNK, CharTokenizer, WordTokenizer, split_words

TEXT = "The cat sat. The dog, however, did not sit!"


def test_split_words_keeps_specials_and_marks():
    assert split_words(f"Hi, you.{EOT}Next") == ["Hi", ",", "you", ".", EOT, "Next"]
    assert split_words("  \n\t ") == []


def test_word_vocabulary_is_sorted_words_then_specials():
    tok = WordTokenizer.from_text(TEXT)
    assert tok.vocab[-2:] == [EOT, UNK]
    words = tok.vocab[:-2]
    assert words == sorted(set(words)) and "cat" in words and "," in words
    assert len(tok) == len(set(split_words(TEXT))) + 2


def test_word_round_trip_on_known_text():
    tok = WordTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    assert len(ids) == len(split_words(TEXT)) and tok.ids[UNK] not in ids
    assert tok.decode(ids) == TEXT


def test_unknown_words_and_end_of_text():
    tok = WordTokenizer.from_text(TEXT)
    ids = tok.encode(f"The zebra sat. {EOT} The cat")
    assert ids.count(tok.ids[UNK]) == 1 and ids.count(tok.ids[EOT]) == 1
    assert tok.decode(ids) == f"The {UNK} sat. {EOT} The cat"


def test_word_tokenizer_requires_unk():
    with pytest.raises(ValueError, match="unk"):
        WordTokenizer(["a", "b"])


def test_char_round_trip_and_unknown():
    text = "naïve café\n\ttabs 🙂"
    tok = CharTokenizer.from_text(text)
    assert len(tok) == len(set(text)) and tok.vocab == sorted(tok.vocab)
    assert tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        tok.encode("zebra")
