"""Shared helpers for the prepare tests: a small corpus, a small profile, a local HTTP server.

Not a conftest: test modules import what they need from here explicitly.
"""

from __future__ import annotations

import http.server
import sysconfig
import threading
from pathlib import Path

from prepare.profiles import Profile

# small enough that a tokenizer trains in well under a second, big enough to fill 512 tokens
TEST_PROFILE = Profile("test", max_seq_len=64, time_budget=1.0, eval_tokens=4096, vocab_size=512,
                       default_source="stdlib")

UNICODE_DOCS = [
    "Ünïcödé text: café, naïve, jalapeño, Straße — “quotes” and ‘apostrophes’.\n",
    "日本語の文章です。中文也可以。한국어도 있습니다. Emoji: 🚀🎉👍🏽 and math: ∑∫√∞ ≠ ≤.\n",
    "Numbers 1234567890 and 3.14159, 2026-11-21, 0xDEADBEEF, −42.\n",
]


def corpus_texts(max_chars: int = 400_000, min_docs: int = 60) -> list[str]:
    """Real-looking documents: standard-library files cut to 4,000 chars, plus unicode docs."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = list(UNICODE_DOCS)
    total = sum(map(len, texts))
    for p in sorted(root.glob("*.py")):
        text = p.read_text(encoding="utf-8", errors="replace")[:4000]
        if len(text) < 200:
            continue
        texts.append(text)
        total += len(text)
        if total >= max_chars and len(texts) >= min_docs:
            break
    return texts


def write_txt_corpus(directory: Path, texts: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(texts):
        (directory / f"doc_{i:04d}.txt").write_text(t, encoding="utf-8")
    return directory


def prepared_tokenizer(tmp_path_factory):
    """Yield the Tokenizer of the test corpus, prepared in a private AUTORESEARCH_HOME (set while
    the generator is open): the body of module-scoped `tok` fixtures."""
    import pytest

    from prepare.core import ensure_prepared
    from prepare.tokenizer import Tokenizer

    home = tmp_path_factory.mktemp("home")
    corpus = write_txt_corpus(tmp_path_factory.mktemp("corpus"), corpus_texts())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_HOME", str(home))
        ensure_prepared(f"local:{corpus}", TEST_PROFILE, progress=False)
        yield Tokenizer.load(f"local:{corpus}", TEST_PROFILE)


def write_parquet(path: Path, texts: list[str], column: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: pa.array(texts, type=pa.string())}), path, row_group_size=64)
    return path


class ShardServer:
    """Serves files of a directory on 127.0.0.1; records requests; can fail the first N GETs of a file."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.requests: list[str] = []
        self.fail_first: dict[str, int] = {}  # file name -> how many 500s to answer first
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                if server.fail_first.get(name, 0) > 0:
                    server.fail_first[name] -= 1
                    self.send_error(500, "flaky")
                    return
                f = server.directory / name
                if not f.is_file():
                    self.send_error(404, "no such shard")
                    return
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ShardServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/data"
