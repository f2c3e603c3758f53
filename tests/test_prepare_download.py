"""prepare: the climbmix downloader against a real local HTTP server (no internet)."""

import time

import pytest

from prepare import download
from prepare.core import ensure_prepared
from prepare.tokenizer import Tokenizer
from prepare_fixtures import TEST_PROFILE, ShardServer, corpus_texts, free_port_url, write_parquet
from swarm.errors import DataError

VAL = download.shard_name(download.VAL_SHARD)


@pytest.fixture()
def served(tmp_path):
    """A directory of 3 training shards + the val shard, served over HTTP."""
    remote = tmp_path / "remote"
    texts = corpus_texts(max_chars=200_000)
    for i in range(3):
        write_parquet(remote / download.shard_name(i), texts[i::4])
    write_parquet(remote / VAL, texts[3::4])
    with ShardServer(remote) as server:
        yield server


def test_downloads_train_and_val_shards(served, tmp_path):
    out = tmp_path / "data"
    result = download.download_climbmix(out, num_shards=2, base_url=served.url, progress=False, backoff=0.01)
    assert result["train"] == ["shard_00000.parquet", "shard_00001.parquet"] and result["val"] == VAL
    assert sorted(p.name for p in out.iterdir()) == ["shard_00000.parquet", "shard_00001.parquet", VAL]
    assert sorted(served.requests) == sorted(["shard_00000.parquet", "shard_00001.parquet", VAL])


def test_skips_files_that_exist(served, tmp_path):
    out = tmp_path / "data"
    download.download_climbmix(out, num_shards=1, base_url=served.url, progress=False, backoff=0.01)
    served.requests.clear()
    result = download.download_climbmix(out, num_shards=3, base_url=served.url, progress=False, backoff=0.01)
    assert sorted(served.requests) == ["shard_00001.parquet", "shard_00002.parquet"]
    assert result["downloaded"] == 2


def test_retries_after_a_server_error(served, tmp_path):
    served.fail_first["shard_00000.parquet"] = 2
    download.download_climbmix(tmp_path / "d", num_shards=1, base_url=served.url, progress=False, backoff=0.01)
    assert served.requests.count("shard_00000.parquet") == 3
    assert (tmp_path / "d" / "shard_00000.parquet").is_file()


def test_gives_up_after_retries_naming_the_url(served, tmp_path):
    served.fail_first["shard_00000.parquet"] = 100
    with pytest.raises(DataError, match=r"shard_00000\.parquet.*HTTP 500"):
        download.download_climbmix(tmp_path / "d", num_shards=1, base_url=served.url, progress=False,
                                   retries=2, backoff=0.01)
    assert not list((tmp_path / "d").glob("shard_00000*"))


def test_corrupt_download_is_deleted_and_named(served, tmp_path):
    (served.directory / "shard_00001.parquet").write_bytes(b"this is not parquet" * 100)
    with pytest.raises(DataError, match=r"shard_00001\.parquet.*corrupt") as err:
        download.download_climbmix(tmp_path / "d", num_shards=2, base_url=served.url, progress=False, backoff=0.01)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "d").glob("shard_00001*"))


def test_missing_text_column_is_corrupt(served, tmp_path):
    write_parquet(served.directory / "shard_00000.parquet", ["a", "b"], column="content")
    with pytest.raises(DataError, match="shard_00000.parquet"):
        download.download_climbmix(tmp_path / "d", num_shards=1, base_url=served.url, progress=False, backoff=0.01)


def test_offline_is_one_clear_line_naming_the_url(tmp_path):
    url = free_port_url()
    t0 = time.time()
    with pytest.raises(DataError, match="cannot reach " + url) as err:
        download.download_climbmix(tmp_path / "d", num_shards=2, base_url=url, progress=False, backoff=5)
    assert time.time() - t0 < 5  # no retry loop on a refused connection
    assert "\n" not in str(err.value)


def test_base_url_from_env(monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CLIMBMIX_URL", "http://mirror.example/x/")
    assert download.base_url_from(None) == "http://mirror.example/x"
    assert download.base_url_from("http://other") == "http://other"
    monkeypatch.delenv("AUTORESEARCH_CLIMBMIX_URL")
    assert download.base_url_from(None) == download.DEFAULT_BASE_URL


def test_ensure_prepared_climbmix_end_to_end(served, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_HOME", str(tmp_path / "home"))
    paths = ensure_prepared("climbmix", TEST_PROFILE, progress=False, num_shards=2, base_url=served.url, backoff=0.01)
    assert [p.name for p in paths.train_files] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert paths.val_file.name == VAL
    assert Tokenizer.load("climbmix", TEST_PROFILE).get_vocab_size() == TEST_PROFILE.vocab_size
    served.requests.clear()
    again = ensure_prepared("climbmix", TEST_PROFILE, progress=False, num_shards=2, base_url=served.url)
    assert served.requests == [] and again.stats == {}
    more = ensure_prepared("climbmix", TEST_PROFILE, progress=False, num_shards=3, base_url=served.url)
    assert served.requests == ["shard_00002.parquet"] and len(more.train_files) == 3
