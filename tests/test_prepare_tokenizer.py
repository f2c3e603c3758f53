"""prepare: tokenizer training, round trip (unicode included), byte table, local/stdlib sources."""

import pytest

from prepare.core import ensure_prepared, resolve
from prepare.tokenizer import BOS, SPECIAL_TOKENS, Tokenizer
from prepare_fixtures import TEST_PROFILE, UNICODE_DOCS, corpus_texts, write_txt_corpus


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    corpus = write_txt_corpus(tmp_path_factory.mktemp("corpus"), corpus_texts())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_HOME", str(home))
        mp.setenv("AUTORESEARCH_PROFILE", "cpu")
        paths = ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
        yield paths, Tokenizer.load(f"local:{corpus}", TEST_PROFILE)


def test_vocab_size_and_specials(prepared):
    _, tok = prepared
    assert tok.get_vocab_size() == TEST_PROFILE.vocab_size
    assert tok.get_bos_token_id() == TEST_PROFILE.vocab_size - len(SPECIAL_TOKENS)
    assert tok.encode("x", prepend=BOS)[0] == tok.get_bos_token_id()
    assert tok.encode("x", prepend=tok.get_bos_token_id()) == tok.encode("x", prepend=BOS)


@pytest.mark.parametrize("text", UNICODE_DOCS + ["", "  leading and trailing  \n\n", "def f(x):\r\n\treturn x ** 2\n"])
def test_round_trip(prepared, text):
    _, tok = prepared
    assert tok.decode(tok.encode(text)) == text


def test_batch_encode_matches_single_and_never_emits_specials(prepared):
    _, tok = prepared
    texts = UNICODE_DOCS + ["text with <|bos|> inside"]
    batch = tok.encode(texts, prepend=BOS)
    assert batch == [tok.encode(t, prepend=BOS) for t in texts]
    ids = tok.encode("text with <|bos|> inside")
    assert tok.get_bos_token_id() not in ids  # special strings in text are ordinary text


def test_numbers_split_into_at_most_two_digits(prepared):
    _, tok = prepared
    pieces = [tok.decode([i]) for i in tok.encode("1234567")]
    assert all(len(p) <= 2 for p in pieces if p.isdigit())


def test_byte_table_matches_decoding(prepared):
    _, tok = prepared
    table = tok.get_token_bytes()
    assert table.shape == (tok.get_vocab_size(),)
    assert int(table[tok.get_bos_token_id()]) == 0
    assert all(int(table[tok.get_vocab_size() - 1 - i]) == 0 for i in range(len(SPECIAL_TOKENS)))
    assert int(table[: tok.get_vocab_size() - len(SPECIAL_TOKENS)].min()) >= 1
    for text in UNICODE_DOCS + corpus_texts(max_chars=20_000, min_docs=3):
        ids = tok.encode(text)
        assert sum(int(table[i]) for i in ids) == len(text.encode("utf-8"))


def test_prepared_data_split_is_deterministic_and_nonempty(prepared):
    paths, _ = prepared
    import pyarrow.parquet as pq

    val = pq.read_table(paths.val_file).column("text").to_pylist()
    train = [t for f in paths.train_files for t in pq.read_table(f).column("text").to_pylist()]
    assert len(val) >= 1 and len(train) > len(val)
    assert not set(val) & set(train)
    assert sorted(val + train) == sorted(set(corpus_texts()))


def test_ensure_prepared_is_idempotent_and_fast(prepared):
    import time

    paths, _ = prepared
    t0 = time.time()
    again = ensure_prepared(paths.source, TEST_PROFILE, progress=False)
    assert time.time() - t0 < 0.5
    assert again.stats == {} and again.train_files == paths.train_files


def test_get_token_bytes_api_uses_active_source(prepared, monkeypatch):
    import prepare

    paths, tok = prepared
    monkeypatch.setenv("AUTORESEARCH_SOURCE", paths.source)
    table = prepare.get_token_bytes("cpu", profile=TEST_PROFILE)
    assert table.tolist() == tok.get_token_bytes().tolist()


def test_stdlib_source_with_char_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path))
    paths = ensure_prepared("stdlib", TEST_PROFILE, progress=False, max_chars=1_000_000)
    assert paths.data_dir.name.startswith("stdlib-py")
    assert 0 < paths.stats["val_docs"] < paths.stats["docs"]
    tok = Tokenizer.load("stdlib", TEST_PROFILE)
    src = "import os\n\nclass Foo:\n    pass\n"
    assert tok.decode(tok.encode(src)) == src
    _, _, again = resolve("stdlib", TEST_PROFILE)
    assert again.train_files == paths.train_files


def test_concurrent_prepares_do_not_collide(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path))
    corpus = write_txt_corpus(tmp_path / "corpus", corpus_texts(max_chars=150_000))
    results, errors = [], []

    def go():
        try:
            results.append(ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(1 for r in results if r.stats) == 1  # exactly one did the work
    assert Tokenizer.load(f"local:{corpus}", TEST_PROFILE).get_vocab_size() == 512


def test_changed_local_corpus_re_prepares_data_and_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    texts = corpus_texts(max_chars=150_000)
    corpus = write_txt_corpus(tmp_path / "corpus", texts)
    first = ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
    (corpus / "extra.txt").write_text("a brand new document " * 50)
    second = ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
    assert second.stats["docs"] == first.stats["docs"] + 1
    assert "tokenizer_seconds" in second.stats  # retrained on the new data
    assert ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False).stats == {}
