"""prepare: bad inputs give one-line errors that say what to do; the CLI; light imports."""

import subprocess
import sys

import pytest

from prepare.core import data_files, ensure_prepared
from prepare.dataloader import make_dataloader
from prepare.tokenizer import Tokenizer
from prepare_fixtures import TEST_PROFILE, corpus_texts, write_parquet, write_txt_corpus
from swarm.errors import ConfigError, DataError


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_no_data_prepared_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        Tokenizer.load("stdlib", "cpu")
    assert "autoresearch prepare --source stdlib --profile cpu" in one_line(err)
    with pytest.raises(DataError) as err:
        data_files("climbmix", "gpu")
    assert "autoresearch prepare --source climbmix --profile gpu" in one_line(err)


def test_public_api_missing_data_names_the_command(tmp_path):
    code = ("import prepare\n"
            "try:\n    prepare.Tokenizer.load()\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    env = {"PATH": "/usr/bin:/bin", "AUTORESEARCH_HOME": str(tmp_path), "AUTORESEARCH_PROFILE": "cpu",
           "PYTHONPATH": "."}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "DataError" in out.stdout and "autoresearch prepare --source stdlib --profile cpu" in out.stdout


def test_missing_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        ensure_prepared(f"local:{tmp_path}/nope", TEST_PROFILE, progress=False)
    assert "does not exist" in one_line(err) and "nope" in one_line(err)


def test_local_dir_without_documents(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet, .jsonl or .txt"):
        ensure_prepared(f"local:{tmp_path}/empty", TEST_PROFILE, progress=False)


def test_empty_and_corrupt_local_shards_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.parquet").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="broken.parquet"):
        ensure_prepared(f"local:{tmp_path}/bad", TEST_PROFILE, progress=False)
    (tmp_path / "nocol").mkdir()
    write_parquet(tmp_path / "nocol" / "x.parquet", ["a"], column="body")
    with pytest.raises(DataError, match=r"x.parquet has no 'text' column"):
        ensure_prepared(f"local:{tmp_path}/nocol", TEST_PROFILE, progress=False)
    (tmp_path / "empty").mkdir()
    write_parquet(tmp_path / "empty" / "e.parquet", [])
    with pytest.raises(DataError, match="at least 2 non-empty documents"):
        ensure_prepared(f"local:{tmp_path}/empty", TEST_PROFILE, progress=False)


def test_vocab_the_corpus_cannot_fill(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    corpus = write_txt_corpus(tmp_path / "tiny", ["hello world", "hello there", "goodbye world"])
    with pytest.raises(DataError) as err:
        ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
    assert "merges of the 252 needed for vocab_size 512" in one_line(err)


def test_jsonl_source_and_bad_jsonl_line(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    (tmp_path / "j").mkdir()
    with open(tmp_path / "j" / "a.jsonl", "w") as f:
        for t in corpus_texts(max_chars=150_000):
            f.write(json.dumps({"text": t}) + "\n")
    paths = ensure_prepared(f"local:{tmp_path}/j/*.jsonl", TEST_PROFILE, progress=False)
    assert paths.stats["docs"] == len(corpus_texts(max_chars=150_000))
    with open(tmp_path / "j" / "a.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"a.jsonl:\d+: not a JSON object"):
        ensure_prepared(f"local:{tmp_path}/j/*.jsonl", TEST_PROFILE, progress=False)  # changed input: redo


def test_corrupt_prepared_shard_is_named_by_the_dataloader(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    corpus = write_txt_corpus(tmp_path / "c", corpus_texts(max_chars=150_000))
    paths = ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
    tok = Tokenizer.load(f"local:{corpus}", TEST_PROFILE)
    paths.val_file.write_bytes(b"broken")
    with pytest.raises(DataError) as err:
        next(make_dataloader(tok, 2, 32, "val"))
    assert str(paths.val_file) in one_line(err)
    paths.val_file.unlink()
    with pytest.raises(DataError, match="missing; run `autoresearch prepare"):
        make_dataloader(tok, 2, 32, "val")


def test_unknown_source_and_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown data source 'bogus'"):
        ensure_prepared("bogus", "cpu")
    with pytest.raises(ConfigError, match="unknown profile 'tpu'"):
        ensure_prepared("stdlib", "tpu")


def test_python_m_prepare_prints_one_line_and_exits_2(tmp_path, capsys):
    from prepare.cli import main

    assert main(["--source", "bogus", "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prepare: error: unknown data source") and err.count("\n") == 1


def test_cli_prepares_a_local_source_and_reports(tmp_path, capsys):
    from prepare.cli import main

    corpus = write_txt_corpus(tmp_path / "c", corpus_texts(max_chars=150_000))
    argv = ["--source", f"local:{corpus}", "--profile", "cpu", "--home", str(tmp_path / "h"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("prepared: source local:") and "vocab 2048" in out and "bytes/token" in out
    assert str(tmp_path / "h" / "tokenizer") in out
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("already prepared")


def test_autoresearch_cli_has_prepare_subcommand():
    from swarm.cli import build_parser

    args = build_parser().parse_args(["prepare", "--source", "stdlib", "--profile", "cpu", "--num-shards", "3"])
    assert callable(args.func) and args.source == "stdlib" and args.num_shards == 3


def test_import_is_light():
    code = ("import sys, prepare, prepare.cli\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'numpy' not in sys.modules, 'numpy imported'\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=".")
    assert out.stdout.strip() == "ok", out.stderr


def test_a_tokenizer_trained_another_way_is_trained_again(tmp_path, monkeypatch):
    """A cached tokenizer from an older recipe (another text amount or per-document cap) is not
    reused: two nodes of one swarm must not score the same commit with different tokenizers."""
    from prepare import tokenizer as tk

    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    corpus = write_txt_corpus(tmp_path / "c", corpus_texts(max_chars=150_000))
    paths = ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
    assert "tokenizer_seconds" in paths.stats  # trained now
    assert "tokenizer_seconds" not in ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False).stats
    monkeypatch.setattr(tk, "TRAIN_DOC_CHARS", tk.TRAIN_DOC_CHARS // 2)  # the rules of another version
    again = ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
    assert "tokenizer_seconds" in again.stats
    assert f"doc_chars={tk.TRAIN_DOC_CHARS}" in (again.tokenizer_dir / "data_id.txt").read_text()
