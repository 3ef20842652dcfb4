"""Tokenizers: round trips, save/load, strict unknown words, malformed files."""

from __future__ import annotations

import json

import pytest

from pulse.data.tokenizers import SPECIAL_TOKENS, ByteBPETokenizer, WordTokenizer, load_tokenizer

CORPUS = [
    "the cat sat on the mat .",
    "the dog sat on the log .",
    "a cat and a dog met on the mat .",
    "Über naïve café — ünïcödé 😀 text, with tabs\tand\nnewlines.",
] * 5


def test_word_specials_and_roundtrip(tmp_path):
    tok = WordTokenizer.from_corpus(CORPUS[:3])
    assert tok.vocab[:4] == list(SPECIAL_TOKENS)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert tok.vocab[4] == "the"  # most frequent first
    text = "the dog sat on the mat ."
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(text, add_bos=True, add_eos=True) == [2] + ids + [3]
    assert tok.encode("the <eos>")[-1] == tok.eos_token_id
    assert tok.decode(tok.encode("the cat", add_bos=True), skip_special_tokens=True) == "the cat"
    path = tok.save(tmp_path / "w")
    assert path.name == "tokenizer.json" and json.loads(path.read_text())["type"] == "word"
    assert not [p for p in (tmp_path / "w").iterdir() if p.name != "tokenizer.json"]  # no tmp left
    for loaded in (WordTokenizer.load(tmp_path / "w"), load_tokenizer(tmp_path / "w"), load_tokenizer(path)):
        assert isinstance(loaded, WordTokenizer) and loaded == tok
        assert loaded.encode(text) == ids


def test_word_unknown_words():
    tok = WordTokenizer.from_vocabulary(["a", "b"])
    assert tok.encode("a zebra b yak") == [4, 1, 5, 1]
    with pytest.raises(ValueError, match=r"'yak'.*'zebra'|'zebra'.*'yak'") as e:
        tok.encode("a zebra b yak zebra", strict=True)
    assert "2 word(s)" in str(e.value)
    assert tok.encode("a b", strict=True) == [4, 5]


def test_word_vocabulary_validation_and_lowercase():
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer.from_vocabulary(["a", "b", "a"])
    with pytest.raises(ValueError, match="whitespace"):
        WordTokenizer.from_vocabulary(["a b"])
    tok = WordTokenizer.from_corpus(["The Cat", "the cat"], lowercase=True)
    assert tok.vocab[4:] == ["cat", "the"]
    assert tok.encode("THE CAT", strict=True) == tok.encode("the cat")
    assert {"T", "t", "c", "C", " "} <= tok.alphabet
    assert WordTokenizer.from_corpus(["a a b c"], min_freq=2).vocab[4:] == ["a"]
    assert WordTokenizer.from_corpus(["a a b b c"], max_size=2).vocab[4:] == ["a", "b"]


def test_bpe_train_save_load_roundtrip(tmp_path):
    tok = ByteBPETokenizer.train(CORPUS, vocab_size=300)
    assert 260 < tok.vocab_size <= 300
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 3)
    assert [tok.token_to_id(s) for s in SPECIAL_TOKENS] == [0, 1, 2, 3]
    for text in CORPUS[:4] + ["unseen wörds ∑ and 中文", ""]:
        ids = tok.encode(text)
        assert all(i >= 4 for i in ids)
        assert tok.decode(ids) == text
    ids = tok.encode("the cat sat")
    assert len(ids) < len("the cat sat")  # merges learned
    assert tok.encode("the cat", add_bos=True, add_eos=True)[0::len(tok.encode("the cat")) + 1] == [2, 3]
    tok.save(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bpe.json", "tokenizer.json"]
    meta = json.loads((tmp_path / "b" / "tokenizer.json").read_text())
    assert meta["type"] == "byte_bpe" and meta["hf_file"] == "bpe.json"
    for loaded in (ByteBPETokenizer.load(tmp_path / "b"), load_tokenizer(tmp_path / "b")):
        assert isinstance(loaded, ByteBPETokenizer)
        assert loaded.vocab_size == tok.vocab_size
        assert loaded.encode(CORPUS[3]) == tok.encode(CORPUS[3])
        assert loaded.decode(tok.encode(CORPUS[3])) == CORPUS[3]
    with pytest.raises(ValueError, match="vocab_size"):
        ByteBPETokenizer.train(CORPUS, vocab_size=100)


def _write(d, text):
    d.mkdir(parents=True, exist_ok=True)
    (d / "tokenizer.json").write_text(text)
    return d


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"format_version": 1}', "'type'"),
        ('{"type": "sentencepiece", "format_version": 1}', "unknown tokenizer type 'sentencepiece'"),
        ('{"type": "word", "format_version": 99, "vocab": []}', "format_version"),
        ('{"type": "word", "format_version": 1}', "'vocab'"),
        ('{"type": "word", "format_version": 1, "vocab": ["a", "b"]}', "must start with"),
        ('{"type": "word", "format_version": 1, "vocab": ["<pad>", "<unk>", "<bos>", "<eos>", "a", "a"]}',
         "duplicate"),
        ('{"type": "byte_bpe", "format_version": 1, "hf_file": "../x.json"}', "hf_file"),
    ],
)
def test_malformed_tokenizer_files(tmp_path, content, match):
    d = _write(tmp_path / "t", content)
    with pytest.raises(ValueError, match=match) as e:
        load_tokenizer(d)
    assert "tokenizer" in str(e.value)


def test_malformed_bpe_file_and_missing(tmp_path):
    d = tmp_path / "b"
    ByteBPETokenizer.train(CORPUS, vocab_size=280).save(d)
    (d / "bpe.json").write_text('{"model": "garbage"}')
    with pytest.raises(ValueError, match="malformed BPE tokenizer file"):
        load_tokenizer(d)
    (d / "bpe.json").unlink()
    with pytest.raises(FileNotFoundError, match="bpe.json"):
        load_tokenizer(d)
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "nothing")
    WordTokenizer.from_vocabulary(["a"]).save(tmp_path / "w")
    with pytest.raises(ValueError, match="'word' tokenizer, not 'byte_bpe'"):
        ByteBPETokenizer.load(tmp_path / "w")


def test_word_normalize_is_saved_and_declared(tmp_path):
    tok = WordTokenizer.from_vocabulary(["mary", "went", "to", "the", "kitchen", ".", "?"], lowercase=True,
                                        split_punctuation=".?")
    assert tok.normalize("Mary went to the Kitchen.  Where?") == "mary went to the kitchen . where ?"
    assert tok.encode("Mary went to the kitchen.", strict=True) == tok.encode("mary went to the kitchen .")
    assert tok.normalization == "lower-cased; . ? split off as words"
    tok.save(tmp_path / "n")
    loaded = load_tokenizer(tmp_path / "n")
    assert loaded == tok and loaded.normalization_declared and loaded.split_punctuation == ".?"
    assert loaded.encode("Mary went to the kitchen.", strict=True) == tok.encode("mary went to the kitchen .")
    # a tokenizer made without normalisation is not normalised: case and attached punctuation stay
    plain = WordTokenizer.from_corpus(["The Cat sat."])
    assert plain.normalize("The Cat  sat.") == "The Cat sat." and plain.encode("the cat", strict=False) == [1, 1]
    assert plain.normalization == ""
    # from_corpus counts the normalised words
    assert WordTokenizer.from_corpus(["The cat sat."], lowercase=True, split_punctuation=".").vocab[4:] == \
        [".", "cat", "sat", "the"]


def test_word_normalize_old_files_and_validation(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "tokenizer.json").write_text(json.dumps({"type": "word", "format_version": 1, "lowercase": False,
                                                  "vocab": list(SPECIAL_TOKENS) + ["a", "."]}))
    old = load_tokenizer(d)  # written before split_punctuation was saved: undeclared, read as before
    assert not old.normalization_declared and old.split_punctuation == "" and old.encode("a.") == [1]
    with pytest.raises(ValueError, match="split_punctuation"):
        WordTokenizer.from_vocabulary(["a"], split_punctuation="a")
    with pytest.raises(ValueError, match="split_punctuation"):
        WordTokenizer.from_vocabulary(["a"], split_punctuation="<")
    with pytest.raises(ValueError, match="could never be read"):
        WordTokenizer.from_vocabulary(["e.g"], split_punctuation=".")
    (d / "tokenizer.json").write_text(json.dumps({"type": "word", "format_version": 1, "split_punctuation": 3,
                                                  "vocab": list(SPECIAL_TOKENS)}))
    with pytest.raises(ValueError, match="split_punctuation"):
        load_tokenizer(d)


def test_story_tokenizer_reads_ordinary_text():
    from pulse.data import build_task

    tok = build_task("story_world").tokenizer
    assert tok.encode("Mary went to the kitchen. Where is Mary?", strict=True) == \
        tok.encode("mary went to the kitchen . where is mary ?")
