"""prepare: best-fit packing invariants (both cropping rules, the reference's checked against an
independent implementation), val determinism, and evaluate_bpb on known outputs."""

import math

import numpy as np
import pytest
import torch

from prepare.dataloader import _Packer, make_dataloader
from prepare.evaluate import evaluate_bpb
from prepare.tokenizer import SPECIAL_TOKENS
from prepare_fixtures import TEST_PROFILE, corpus_texts, prepared_tokenizer

B, T = 4, 64


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    yield from prepared_tokenizer(tmp_path_factory)


def take(loader, n):
    out = [next(loader) for _ in range(n)]
    loader.close()
    return out


def test_rows_start_with_bos_are_full_and_shifted(tok):
    bos = tok.get_bos_token_id()
    others = set(range(tok.get_vocab_size() - len(SPECIAL_TOKENS), tok.get_vocab_size())) - {bos}
    for x, y, epoch in take(make_dataloader(tok, B, T, "train"), 20):
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64
        assert (x[:, 0] == bos).all()
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert not any(int(v) in others for v in torch.cat([x, y]).unique())  # no padding/reserved ids
        assert int(x.min()) >= 0 and int(y.max()) < tok.get_vocab_size()
        assert epoch >= 1


def test_every_segment_is_real_document_text(tok):
    texts = corpus_texts()
    bos = tok.get_bos_token_id()
    x, y, _ = next(make_dataloader(tok, B, T, "train"))
    rows = torch.cat([x, y[:, -1:]], dim=1)
    for row in rows.tolist():
        starts = [i for i, t in enumerate(row) if t == bos] + [len(row)]
        for a, b in zip(starts, starts[1:]):
            piece = tok.decode(row[a + 1 : b])
            # a cropped piece may start or end mid-character: compare on the complete part
            piece = piece.strip("\ufffd")
            assert any(piece in t for t in texts), piece[:60]


def test_val_is_deterministic_across_loaders(tok):
    a = take(make_dataloader(tok, B, T, "val"), 5)
    b = take(make_dataloader(tok, B, T, "val"), 5)
    for (xa, ya, _), (xb, yb, _) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_loops_and_counts_epochs(tok):
    loader = make_dataloader(tok, 16, T, "train")
    epochs = [next(loader)[2] for _ in range(200)]
    loader.close()
    assert epochs[0] == 1 and max(epochs) >= 2 and epochs == sorted(epochs)


class LenTokenizer:
    """Fake tokenizer: a text of n characters is n tokens (ids 1..n, so cropping is visible)."""

    def get_bos_token_id(self):
        return 0

    def encode(self, texts, num_threads=1):
        return [list(range(1, len(t) + 1)) for t in texts]


def test_best_fit_takes_largest_fitting_doc_and_crops_only_when_nothing_fits(tmp_path):
    from prepare_fixtures import write_parquet

    # lengths with BOS: 6, 4, 3, 12
    f = write_parquet(tmp_path / "s.parquet", ["a" * 5, "b" * 3, "c" * 2, "d" * 11])
    p = _Packer(LenTokenizer(), [f], loop=False, threads=1, capacity=4, keep_rest=True)
    rows = np.full((1, 10), -1, dtype=np.int32)
    p.fill(rows)
    # room 10: the largest that fits is 6 (BOS+5), then room 4: exactly the 4 (BOS+3); no crop
    assert rows[0].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert sorted(p.lengths) == [3, 12]
    p.fill(rows)
    # room 10: 3 fits (BOS+2); then room 7: nothing fits, so the (oldest) 12 is cropped to 7
    assert rows[0].tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 6]
    assert p.lengths == [6]  # its rest (5 tokens) went back with a BOS


def test_crop_takes_the_oldest_document_so_none_starves(tmp_path):
    from prepare_fixtures import write_parquet

    f = write_parquet(tmp_path / "s.parquet", ["a" * 30, "b" * 12, "c" * 15])
    p = _Packer(LenTokenizer(), [f], loop=False, threads=1, capacity=4, keep_rest=True)
    rows = np.full((1, 10), -1, dtype=np.int32)
    p.fill(rows)
    assert rows[0].tolist() == [0] + list(range(1, 10))  # from the 30 (oldest), not the 12
    assert sorted(p.lengths) == [13, 16, 22]


def test_cropped_rest_is_not_lost(tmp_path):
    from prepare_fixtures import write_parquet

    f = write_parquet(tmp_path / "s.parquet", ["x" * 25])
    p = _Packer(LenTokenizer(), [f], loop=True, threads=1, keep_rest=True)
    rows = np.full((3, 10), -1, dtype=np.int32)
    p.fill(rows)
    # 25 tokens: 9 + 9 + 7 fill rows of 10 with a BOS each (then the next pass starts)
    assert rows[0].tolist() == [0] + list(range(1, 10))
    assert rows[1].tolist() == [0] + list(range(10, 19))
    assert rows[2][:8].tolist() == [0] + list(range(19, 26))


def test_reference_packing_crops_the_shortest_and_drops_its_rest(tmp_path):
    from prepare_fixtures import write_parquet

    f = write_parquet(tmp_path / "s.parquet", ["a" * 30, "b" * 12, "c" * 15])
    p = _Packer(LenTokenizer(), [f], loop=False, threads=1, capacity=4)  # keep_rest off: the gpu profile's rule
    rows = np.full((1, 10), -1, dtype=np.int32)
    p.fill(rows)
    assert rows[0].tolist() == [0] + list(range(1, 10))  # the first 9 of the 12 (the shortest) ...
    assert sorted(p.lengths) == [16, 31]  # ... and its last 3 are gone


class NumberTokenizer:
    """Fake tokenizer: a text of space-separated numbers is those numbers (so every document is visible)."""

    def get_bos_token_id(self):
        return 0

    def encode(self, texts, num_threads=1):
        return [[int(w) for w in t.split()] for t in texts]


def reference_rows(groups, n_rows, width, buffer_docs=1000, read_docs=128):
    """The reference's best-fit packing, written out plainly from its description: a list buffer
    topped up to `buffer_docs` documents (`read_docs` per read, row group by row group) before every
    placement; the first longest document that fits, else the first shortest cropped, its rest dropped."""
    def reads():
        while True:
            for group in groups:
                for i in range(0, len(group), read_docs):
                    yield group[i : i + read_docs]

    stream, buffer, rows = reads(), [], []
    for _ in range(n_rows):
        row = []
        while len(row) < width:
            while len(buffer) < buffer_docs:
                buffer.extend([0] + doc for doc in next(stream))
            room = width - len(row)
            fits = [i for i, doc in enumerate(buffer) if len(doc) <= room]
            if fits:
                row += buffer.pop(max(fits, key=lambda i: len(buffer[i])))
            else:
                row += buffer.pop(min(range(len(buffer)), key=lambda i: len(buffer[i])))[:room]
        rows.append(row)
    return rows


def test_reference_packing_gives_the_reference_rows(tmp_path):
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(7)
    width, group_size = 65, 300  # rows of T+1 tokens; docs per parquet row group
    docs = [[1 + i] * rng.choice([rng.randint(1, 20), rng.randint(20, 64), rng.randint(64, 200)]) for i in range(2400)]
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": [" ".join(map(str, d)) for d in docs]}), path, row_group_size=group_size)
    groups = [docs[i : i + group_size] for i in range(0, len(docs), group_size)]

    p = _Packer(NumberTokenizer(), [path], loop=True, threads=1, capacity=1000)
    rows = np.full((400, width), -1, dtype=np.int32)
    p.fill(rows)
    assert rows.tolist() == reference_rows(groups, 400, width)


class UniformModel(torch.nn.Module):
    """All-zero logits: the loss of every target is exactly ln(V)."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, y, reduction="mean"):
        logits = torch.zeros(*x.shape, self.vocab) + 0 * self.dummy
        return torch.nn.functional.cross_entropy(logits.view(-1, self.vocab), y.view(-1), reduction=reduction)


def test_evaluate_bpb_of_uniform_model_is_log2_vocab_times_tokens_per_byte(tok):
    V = tok.get_vocab_size()
    batch = 4
    steps = TEST_PROFILE.eval_tokens // (batch * TEST_PROFILE.max_seq_len)
    # expected, computed independently: byte length of each target from tiktoken directly
    specials = {tok.enc.encode_single_token(s) for s in SPECIAL_TOKENS}
    n_targets = n_bytes = 0
    loader = make_dataloader(tok, batch, TEST_PROFILE.max_seq_len, "val")
    for _ in range(steps):
        _, y, _ = next(loader)
        for t in y.reshape(-1).tolist():
            if t not in specials:
                n_targets += 1
                n_bytes += len(tok.enc.decode_single_token_bytes(t))
    loader.close()
    expected = math.log2(V) * n_targets / n_bytes
    got = evaluate_bpb(UniformModel(V), tok, batch)
    assert got == pytest.approx(expected, rel=1e-6)


def test_evaluate_bpb_excludes_special_targets_and_accepts_any_loss_shape(tok):
    bos = tok.get_bos_token_id()

    class SpecialIsExpensive(torch.nn.Module):
        def forward(self, x, y, reduction="none"):
            # huge loss on BOS targets (must be ignored), 1 nat elsewhere; returned as [B, T]
            return torch.where(y == bos, torch.tensor(1e6), torch.tensor(1.0))

    bpb = evaluate_bpb(SpecialIsExpensive(), tok, 2)
    assert 0 < bpb < 2  # 1 nat per token / (ln2 * bytes per token) with ~3 bytes a token
