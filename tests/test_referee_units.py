"""The referee's pure parts: guard decisions, probes, fingerprints, wire, limits, task specs.

Fast and in-process, except the guard's installed hook, which is tried in a subprocess (an audit
hook cannot be removed once added).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from prepare import guard as guard_mod
from prepare import probes
from prepare.core import PreparedPaths
from prepare.evaluate import BpbSum, eval_rows, evaluate_bpb, token_nats
from prepare.profiles import PROFILES, active_profile
from prepare.referee import (Limits, changed_files, fingerprint, python_target, summary_lines, task_command,
                             watched_files)
from prepare.transport import Channel, Closed, Deadline, ProtocolError
from swarm.errors import ConfigError
from swarm.summary import REJECT_EXIT, parse_summary, referee_rejection
from swarm.task import PYTHON, gpt_task, load_task

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                 "total_tokens_M", "num_steps", "num_params_M", "depth")


# ---- the guard's decisions ------------------------------------------------------------------


@pytest.fixture()
def layout(tmp_path):
    home = tmp_path / "home"
    data = home / "data" / "src"
    data.mkdir(parents=True)
    (data / "train_00000.parquet").write_bytes(b"train")
    (data / "val.parquet").write_bytes(b"val")
    (data / "manifest.json").write_text("{}")
    tok = home / "tokenizer" / "src" / "cpu-2048"
    tok.mkdir(parents=True)
    (tok / "tokenizer.pkl").write_bytes(b"tok")
    code = tmp_path / "repo" / "prepare"
    code.mkdir(parents=True)
    (code / "evaluate.py").write_text("# metric\n")
    paths = PreparedPaths(home, "src", "cpu", data, tok, (data / "train_00000.parquet",), data / "val.parquet")
    rules = guard_mod.Rules.for_run(paths, [code], referee_pid=4242)
    return paths, code, guard_mod.Guard(rules)


def test_guard_refuses_the_val_split_however_it_is_named(layout, tmp_path):
    paths, code, g = layout
    val = str(paths.val_file)
    assert "validation data" in g.check("open", (val, "r", os.O_RDONLY))
    assert "validation data" in g.check("open", (val, None, os.O_RDONLY))  # os.open
    assert "validation data" in g.check(guard_mod.READ_SHARD, (val,))
    rel = os.path.relpath(val)
    assert "validation data" in g.check("open", (rel, "rb", 0))
    os.symlink(val, tmp_path / "sym.parquet")
    os.link(val, tmp_path / "hard.parquet")  # same file, another name
    assert "validation data" in g.check("open", (str(tmp_path / "sym.parquet"), "r", 0))
    assert "validation data" in g.check("open", (tmp_path / "hard.parquet", "r", 0))  # a PathLike
    assert "validation data" in g.check("open", (os.fsencode(val), "r", 0))
    assert g.check("open", (str(paths.data_dir), None, 0))  # a directory read whole (pyarrow)
    fd = os.open(val, os.O_RDONLY)
    try:
        assert "validation data" in g.check("open", (fd, "r", 0))
    finally:
        os.close(fd)
    assert "referee's process" in g.check("open", ("/proc/4242/mem", "rb", 0))
    for ok in (str(paths.train_files[0]), str(paths.tokenizer_dir / "tokenizer.pkl"), str(code / "evaluate.py"),
               str(tmp_path / "nothing-here")):
        assert g.check("open", (ok, "r", 0)) is None, ok


def test_guard_refuses_changes_under_protected_directories(layout, tmp_path):
    paths, code, g = layout
    target = str(code / "evaluate.py")
    assert "for writing" in g.check("open", (target, "a", os.O_WRONLY | os.O_APPEND))
    assert "for writing" in g.check("open", (target, None, os.O_RDWR))
    assert "for writing" in g.check("open", (str(code / "new.py"), "w", 0))  # a new file
    assert "for writing" in g.check("open", (str(paths.tokenizer_dir / "x"), "wb", 0))
    assert "for writing" in g.check("open", (str(paths.data_dir / "manifest.json"), "r+", 0))
    os.symlink(code, tmp_path / "alias")
    assert "for writing" in g.check("open", (str(tmp_path / "alias" / "evaluate.py"), "w", 0))
    assert g.check("os.remove", (str(paths.tokenizer_dir / "tokenizer.pkl"), -1)).startswith("removed")
    assert g.check("os.rename", (str(tmp_path / "x"), target, -1, -1)).startswith("renamed")  # into
    assert g.check("os.rename", (target, str(tmp_path / "x"), -1, -1)).startswith("renamed")  # out of
    assert g.check("os.link", (target, str(tmp_path / "h"), -1, -1)).startswith("linked")
    assert g.check("os.symlink", (str(tmp_path / "x"), str(code / "s.py"), -1)).startswith("linked")
    assert g.check("shutil.rmtree", (str(paths.data_dir), None)).startswith("removed")
    assert g.check("os.mkdir", (str(code / "sub"), 0o777, -1)).startswith("created")
    assert g.check("os.truncate", (target, 0)).startswith("truncated")
    assert g.check("os.utime", (target, None, None, -1)).startswith("changed the times")
    assert g.check("os.chmod", (target, 0o777, -1)).startswith("changed the mode")
    assert g.check("shutil.copyfile", (str(tmp_path / "x"), target)).startswith("copied")
    for ok in (("open", (str(tmp_path / "out.txt"), "w", 0)), ("os.remove", (str(tmp_path / "out.txt"), -1)),
               ("os.mkdir", (str(tmp_path / "d"), 0o777, -1)), ("import", ("os",)), ("exec", (None,))):
        assert g.check(*ok) is None, ok
    site = guard_mod.Rules.for_run(paths).no_write
    assert any("site-packages" in d for d in site)  # the interpreter's libraries: the referee imports them


GUARD_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from prepare import guard
    from prepare.core import PreparedPaths
    home, repo = Path(sys.argv[1]), Path(sys.argv[2])
    data = home / "data" / "src"
    paths = PreparedPaths(home, "src", "cpu", data, home / "tokenizer", (data / "train.parquet",), data / "val.parquet")
    reports = []
    guard.install(guard.Rules.for_run(paths, [repo / "prepare"]), reports.append)
    import pyarrow.dataset as ds, pyarrow.parquet as pq
    from prepare.dataloader import _doc_stream
    tries = {
        "open": lambda: open(data / "val.parquet", "rb").read(),
        "pq.read_table": lambda: pq.read_table(str(data / "val.parquet")),
        "pq.ParquetFile": lambda: pq.ParquetFile(data / "val.parquet"),
        "pq.read_table(dir)": lambda: pq.read_table(str(data)),
        "ds.dataset([val])": lambda: ds.dataset([str(data / "val.parquet")]).to_table(),
        "prepare reader": lambda: next(_doc_stream([data / "val.parquet"], loop=False)),
        "write prepare": lambda: open(repo / "prepare" / "x.py", "w"),
        "remove tokenizer": lambda: os.remove(home / "tokenizer" / "t.pkl"),
        "train": lambda: pq.read_table(str(data / "train.parquet")).num_rows,
        "prepare reader train": lambda: len(next(_doc_stream([data / "train.parquet"], loop=False))[0]),
    }
    out = {}
    for name, fn in tries.items():
        try:
            fn()
            out[name] = "allowed"
        except PermissionError:
            out[name] = "refused"
    print(json.dumps({"results": out, "reports": len(reports)}))
''')


def test_installed_guard_covers_python_pyarrow_and_prepare_readers(tmp_path):
    from prepare_fixtures import write_parquet

    home, repo = tmp_path / "home", tmp_path / "repo"
    data = home / "data" / "src"
    write_parquet(data / "val.parquet", ["secret validation text"] * 3)
    write_parquet(data / "train.parquet", ["some training text"] * 3)
    (home / "tokenizer").mkdir(parents=True)
    (home / "tokenizer" / "t.pkl").write_bytes(b"t")
    (repo / "prepare").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", GUARD_SCRIPT, str(home), str(repo)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    results = got.pop("results")
    assert {k for k, v in results.items() if v == "allowed"} == {"train", "prepare reader train"}, results
    assert got["reports"] == len(results) - 2
    assert (home / "tokenizer" / "t.pkl").exists() and not (repo / "prepare" / "x.py").exists()


# ---- probes -----------------------------------------------------------------------------------


def _rows(n=40, T=32, V=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n, T + 1), generator=g)


def test_probe_plan_and_tokens():
    rng = random.Random(5)
    rows = _rows()
    plan = probes.plan(rows.size(0), 32, 8, 3, rng)
    assert len(plan) == 3 and all(len(p) == 8 for p in plan)
    for probe in plan:
        assert len({p.src for p in probe}) == 8
        for p in probe:
            assert 0 <= p.t <= 30 and max(p.positions) == p.t and all(0 <= q <= p.t for q in p.positions)
            assert set(range(max(0, p.t - 3), p.t + 1)) <= set(p.positions)
        x = probes.probe_tokens(rows, probe, 50, rng)
        assert x.shape == (8, 32)
        for r, p in enumerate(probe):
            assert torch.equal(x[r, : p.t + 1], rows[p.src, : p.t + 1])
            assert x[r, p.t + 1] != rows[p.src, p.t + 1]


def _compare(model, tolerance=probes.TOLERANCES["cpu"]):
    """Run the comparison for `model` (x [B, T] -> logits) over 2 probe batches of 8 rows."""
    rng = random.Random(1)
    rows = _rows()
    plan = probes.plan(rows.size(0), 32, 8, 2, rng)
    comp = probes.Comparison(rows, plan, tolerance)
    for start in range(0, rows.size(0), 8):
        comp.on_real(start, model(rows[start : start + 8, :-1]))
    for i, probe in enumerate(plan):
        comp.on_probe(i, model(probes.probe_tokens(rows, probe, 50, rng)))
    return comp.verdict(), comp


def _causal(x):  # logits from a running mean of one-hot prefixes: strictly causal
    oh = torch.nn.functional.one_hot(x, 50).float()
    return torch.cumsum(oh, dim=1) / torch.arange(1, x.size(1) + 1)[None, :, None]


def test_comparison_passes_a_causal_model_and_catches_peeking():
    verdict, comp = _compare(_causal)
    assert verdict is None and comp.compared == 16 and comp.worst == 0.0

    def peek(x):
        return _causal(x) + 3.0 * torch.nn.functional.one_hot(torch.roll(x, -1, 1), 50).float()

    verdict, _ = _compare(peek)
    assert verdict and "future tokens" in verdict

    def peek_far(x):  # looks at the last token of the row
        return _causal(x) + x[:, -1:, None].float() * 0.01

    assert _compare(peek_far)[0]

    def nudge(x):  # a tiny peek, under the max-|delta| tolerance given: caught by the gain per distance
        return _causal(x) + 1e-3 * torch.nn.functional.one_hot(torch.roll(x, -1, 1), 50).float()

    verdict, comp = _compare(nudge, probes.Tolerance(max_abs=1.0, mean_gain=1e-4))
    assert verdict and "gains" in verdict and comp.gain > 1e-4

    seen = set()

    def stateful(x):  # answers from memory of rows seen before
        out = _causal(x)
        for r in range(x.size(0)):
            key = tuple(x[r, :4].tolist())
            if key in seen:
                out[r] += 1.0
            seen.add(key)
        return out

    assert _compare(stateful)[0]

    def masked(x):  # -inf logits on both sides are equal, not a difference
        out = _causal(x)
        out[..., 0] = -math.inf
        return out

    assert _compare(masked)[0] is None

    with pytest.raises(ValueError):
        _compare(lambda x: _causal(x) * math.nan)


# ---- evaluation arithmetic ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from prepare_fixtures import prepared_tokenizer

    yield from prepared_tokenizer(tmp_path_factory)


def test_eval_rows_do_not_depend_on_the_batch_size(tok):
    from prepare_fixtures import TEST_PROFILE

    a, b = eval_rows(tok, chunk=3), eval_rows(tok, chunk=64)
    assert a.shape == (TEST_PROFILE.eval_tokens // TEST_PROFILE.max_seq_len, TEST_PROFILE.max_seq_len + 1)
    assert torch.equal(a, b)


def test_logits_path_equals_evaluate_bpb(tok):
    """The referee's arithmetic (logits -> token_nats -> BpbSum) equals evaluate_bpb's (loss API)."""
    V = tok.get_vocab_size()
    torch.manual_seed(0)
    table = torch.randn(V, V + 3)  # a padded vocabulary: 3 extra logits, normalised over too

    class Model(torch.nn.Module):
        def forward(self, x, y=None, reduction="mean"):
            logits = table[x]
            if y is None:
                return logits
            return torch.nn.functional.cross_entropy(logits.view(-1, V + 3), y.reshape(-1), reduction=reduction)

    want = evaluate_bpb(Model(), tok, 5)  # 5 does not divide the rows: a short last batch
    rows = eval_rows(tok)
    total = BpbSum(tok.get_token_bytes())
    for start in range(0, rows.size(0), 7):
        x, y = rows[start : start + 7, :-1], rows[start : start + 7, 1:]
        total.add(token_nats(Model()(x), y), y)
    assert total.bpb() == pytest.approx(want, rel=1e-9)


# ---- fingerprints, commands, summary --------------------------------------------------------


def test_fingerprints_see_any_change(layout):
    paths, code, _ = layout
    files = watched_files(paths, [code])
    assert paths.val_file in files and code / "evaluate.py" in files
    before = fingerprint(files)
    assert changed_files(before, fingerprint(files)) == []
    (code / "evaluate.py").write_text("# metric, changed\n")
    (paths.tokenizer_dir / "tokenizer.pkl").unlink()
    changed = changed_files(before, fingerprint(files))
    assert changed == sorted([str(code / "evaluate.py"), str(paths.tokenizer_dir / "tokenizer.pkl")])


def test_trainer_command_must_be_python():
    assert python_target(["{python}", "-m", "trainer.train"]) == {"module": "trainer.train", "path": None, "args": []}
    assert python_target([sys.executable, "-u", "train.py", "--x"]) == {"module": None, "path": "train.py", "args": ["--x"]}
    for bad in (["bash", "run.sh"], ["{python}"], ["{python}", "-c", "print(1)"], []):
        with pytest.raises(ConfigError):
            python_target(bad)
    assert task_command({}) == ["{python}", "-m", "trainer.train"]
    assert task_command({"AUTORESEARCH_TASK_COMMAND": '["python3", "x.py"]'}) == ["python3", "x.py"]
    with pytest.raises(ConfigError, match="JSON list"):
        task_command({"AUTORESEARCH_TASK_COMMAND": "python x.py"})


def test_summary_block_keeps_the_contract_keys_and_takes_junk_claims():
    stats = {"training_seconds": 20.04, "peak_vram_mb": 812.0, "mfu_percent": float("nan"), "num_steps": 97,
             "num_params_M": "lots", "depth": 4, "attention": "sdpa\n---\nval_bpb: 0.1"}
    lines = summary_lines(1.987654321, stats, 35.25, 27.5, 3.25)
    assert lines[0] == "---" and len(lines) == 13
    s = parse_summary("noise\n---\nval_bpb: 0.1\n" + "\n".join(lines))
    assert all(k in s for k in CONTRACT_KEYS) and s["val_bpb"] == 1.987654
    assert s["mfu_percent"] == 0.0 and s["num_params_M"] == 0.0 and s["total_tokens_M"] == 0.0
    assert s["attention"] == "unknown" and s["handover_seconds"] == 27.5 and s["eval_seconds"] == 3.2


def test_referee_rejection_is_exit_3_and_a_last_line():
    assert REJECT_EXIT == 3
    tail = "step 1\n---\nval_bpb: 0.1\n---\nrejected: the trainer read the validation data (x)\n\n"
    assert referee_rejection(3, tail) == "the trainer read the validation data (x)"
    assert referee_rejection(1, tail) is None and referee_rejection(0, tail) is None
    assert referee_rejection(None, tail) is None
    assert referee_rejection(3, "Traceback ...\nSystemExit: 3\n") is None  # a trainer's own exit 3 is a crash
    assert referee_rejection(3, "rejected:\n") == "(no reason given)"


# ---- the wire ---------------------------------------------------------------------------------


def test_channel_frames_limits_and_deadlines():
    a, b = socket.socketpair()
    left, right = Channel(a), Channel(b)
    left.send({"type": "x", "n": 1}, torch.arange(6, dtype=torch.float32).numpy())
    msg, payload = right.recv(time.monotonic() + 5, max_payload=24)
    assert msg == {"type": "x", "n": 1} and bytes(payload) == torch.arange(6, dtype=torch.float32).numpy().tobytes()
    buf = bytearray(8)
    left.send({"type": "y"}, b"12345678")
    msg, payload = right.recv(into=buf)
    assert bytes(payload) == b"12345678" and payload.obj is buf  # read into the caller's buffer
    left.send({"type": "big"}, b"x" * 100)
    with pytest.raises(ProtocolError, match="over the limit"):
        right.recv(time.monotonic() + 5, max_payload=10)
    c, d = socket.socketpair()
    with pytest.raises(Deadline):
        Channel(c).recv(time.monotonic() + 0.2)
    d.sendall(b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00[]")
    with pytest.raises(ProtocolError, match="no type"):
        Channel(c).recv(time.monotonic() + 5)
    d.close()
    with pytest.raises(Closed):
        Channel(c).recv(time.monotonic() + 5)


# ---- limits, profiles, task specs -------------------------------------------------------------


def test_limits_and_overrides():
    cpu = active_profile({"AUTORESEARCH_PROFILE": "cpu"})
    assert cpu is PROFILES["cpu"]
    short = active_profile({"AUTORESEARCH_PROFILE": "cpu", "AUTORESEARCH_TIME_BUDGET": "3",
                            "AUTORESEARCH_STARTUP_ALLOWANCE": "4.5", "AUTORESEARCH_EVAL_ALLOWANCE": "6"})
    assert (short.time_budget, short.startup_allowance, short.eval_allowance) == (3.0, 4.5, 6.0)
    assert short.max_seq_len == cpu.max_seq_len and short.vocab_size == cpu.vocab_size
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="AUTORESEARCH_TIME_BUDGET"):
            active_profile({"AUTORESEARCH_PROFILE": "cpu", "AUTORESEARCH_TIME_BUDGET": bad})
    limits = Limits.of(short)
    assert limits.handover == 7.5 and limits.kill_after == 17.5 and limits.worst_case == 23.5
    for name in ("gpu", "cpu"):  # the worker's hard timeout leaves the referee time to refuse a slow run
        assert gpt_task(name).hard_timeout >= Limits.of(PROFILES[name]).worst_case + 30


def test_task_spec_referee_round_trips(tmp_path):
    t = gpt_task("cpu")
    assert t.referee == (PYTHON, "-m", "prepare.referee") and t.command == (PYTHON, "-m", "trainer.train")
    assert t.run_argv() == [sys.executable, "-m", "prepare.referee"]
    assert json.loads(t.run_env()["AUTORESEARCH_TASK_COMMAND"]) == [sys.executable, "-m", "trainer.train"]
    plain = t.with_changes(referee=())
    assert plain.run_argv() == plain.argv() and plain.run_env() == {}

    f = tmp_path / "task.toml"
    f.write_text('[task]\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n'
                 'referee = ["{python}", "judge.py", "--strict"]\n')
    spec = load_task(f)
    assert spec.referee == ("{python}", "judge.py", "--strict")
    assert spec.run_argv() == [sys.executable, "judge.py", "--strict"]
    assert json.loads(spec.run_env()["AUTORESEARCH_TASK_COMMAND"]) == [sys.executable, "train.py"]
    assert load_task(_toml(f, "")).referee == ()  # no referee: the command prints its own block
    with pytest.raises(ConfigError, match="referee must be a list of strings"):
        load_task(_toml(f, 'referee = "judge.py"\n'))


def _toml(f: Path, extra: str) -> Path:
    f.write_text('[task]\nmutable_files = ["train.py"]\ncommand = ["{python}", "train.py"]\n' + extra)
    return f


def test_task_spec_referee_survives_the_journal():
    """The journal stores the task as JSON (swarm.config): a resumed run keeps its referee."""
    from swarm.config import task_from_dict, task_to_dict

    t = gpt_task("cpu")
    back = task_from_dict(json.loads(json.dumps(task_to_dict(t))))
    assert back == t and back.referee == t.referee
    old = task_to_dict(t)
    del old["referee"]  # a journal written before the referee existed
    assert task_from_dict(json.loads(json.dumps(old))).referee == ()
