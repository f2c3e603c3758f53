"""The built-in offline agent (swarm.agents.builtin): string in, proposal out; no network."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from pathlib import Path

import pytest

from swarm.agents import AgentSpec, make_agent
from swarm.agents.base import Agent, AgentContext
from swarm.agents.builtin import NOTHING_LEFT, BuiltinAgent, arm_statistics, measured_delta, reward_scale
from swarm.agents.hyperparams import all_edits, apply_edits, effective_constants, parse_description
from swarm.records import HistoryEntry, InFlight, Proposal, Reapply, Status, Usage
from swarm.task import TaskSpec

STANDIN = '''"""A generic stand-in trainer: constants only, no profile block."""
LR = 0.1  # learning rate
WIDTH = 64  # hidden width
DEPTH = 3  # layers
DROPOUT = 0.1  # dropout probability
PATTERN = "ab"  # block pattern
USE_BIAS = True  # linear biases
'''
GPT_LIKE = '''from prepare import PROFILE

DEPTH = 8  # blocks
MATRIX_LR = 0.04  # Muon lr
TOTAL_BATCH_SIZE = 2**19  # tokens per step
WINDOW_PATTERN = "SSSL"  # S short, L long

if PROFILE == "cpu":
    DEPTH = 4
    TOTAL_BATCH_SIZE = 2**13
'''
TASK = TaskSpec("toy", ("train.py",), ("python", "train.py"))


def context(text=STANDIN, history=(), commit="c0", metric=1.0, profile=None, seed=0, task=TASK, noise=None,
            in_flight=(), reapply=None):
    return AgentContext(
        worker="w0", worktree=Path("."), task=task, program="", files={task.mutable_files[0]: text},
        baseline_commit=commit, baseline_metric=metric, noise=noise, history=tuple(history),
        profile=profile, seed=seed, in_flight=tuple(in_flight), reapply=reapply,
    )


def entry(i, description, status=Status.DISCARD, metric=1.1, parent="c0", parent_metric=1.0, **more):
    return HistoryEntry(i, "w0", "builtin", description, status, metric, parent, parent_metric, **more)


def running(i, description, parent="c0"):
    return InFlight(i, f"w{i}", "builtin", parent, description)


def test_protocol_and_factory():
    agent = make_agent(AgentSpec("builtin", "builtin", {"max_level": 2}), seed=3)
    assert isinstance(agent, Agent) and isinstance(agent, BuiltinAgent)
    assert agent.name == "builtin" and agent.seed == 3 and agent.max_level == 2


def test_empty_history_gives_a_valid_one_constant_edit():
    p = BuiltinAgent(seed=1).propose(context())
    assert isinstance(p, Proposal) and p.error is None and p.usage == Usage()
    (parsed,) = parse_description(p.description)
    new = p.files["train.py"]
    changed = [(a, b) for a, b in zip(STANDIN.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith(parsed.name + " = ")
    assert effective_constants(new)[parsed.name].value == parsed.new_value


def test_deterministic_for_the_same_seeds():
    a = BuiltinAgent(seed=5).propose(context(seed=9)).description
    b = BuiltinAgent(seed=5).propose(context(seed=9)).description
    assert a == b
    others = {BuiltinAgent(seed=s).propose(context(seed=9)).description for s in range(12)}
    assert len(others) > 1  # different workers spread out


def test_never_repeats_on_the_same_baseline_until_exhausted():
    agent = BuiltinAgent(seed=2)
    total = len(all_edits(STANDIN))
    history, keys = [], []
    for i in range(total + 3):
        p = agent.propose(context(history=history))
        if p.error:
            assert p.error == NOTHING_LEFT
            break
        keys.append(parse_description(p.description)[0].key)
        history.append(entry(i, p.description, metric=1.0 + random.Random(i).random() * 0.1))
    assert len(keys) == len(set(keys)) == total


def test_in_flight_proposals_are_not_repeated_and_history_of_other_baselines_does_not_block():
    agent = BuiltinAgent(seed=0)
    descriptions = [agent.propose(context()).description for _ in range(8)]  # nothing finished yet
    assert len(set(descriptions)) == 8
    fresh = BuiltinAgent(seed=0)
    first = fresh.propose(context()).description
    other_baseline = [entry(0, first, parent="old")]
    assert fresh.propose(context(history=other_baseline, commit="c1")).error is None


def test_cpu_profile_edits_the_override_block():
    task = TaskSpec("gpt", ("trainer/train.py",), ("python",))
    agent = BuiltinAgent(seed=0, only=["DEPTH", "TOTAL_BATCH_SIZE"])
    for i in range(4):
        p = agent.propose(context(GPT_LIKE, profile="cpu", task=task, seed=i))
        new = p.files["trainer/train.py"]
        assert effective_constants(new, "gpu") == effective_constants(GPT_LIKE, "gpu")
        assert effective_constants(new, "cpu") != effective_constants(GPT_LIKE, "cpu")
        assert "2**" in new.split('if PROFILE == "cpu":')[1]


def test_errors_become_proposals():
    missing = BuiltinAgent().propose(context(task=TaskSpec("t", ("other.py",), ("x",))).__class__(
        **{**context().__dict__, "files": {}}))
    assert missing.error and not missing.files
    broken = BuiltinAgent().propose(context(text="LR = (\n"))
    assert broken.error and "parse" in broken.error
    nothing = BuiltinAgent().propose(context(text='NAME = "some words"\n'))
    assert nothing.error == NOTHING_LEFT


def test_rewards_follow_improvement_direction_and_penalise_crashes():
    history = [
        entry(0, "LR 0.1 -> 0.07", Status.KEEP, metric=0.8, parent_metric=1.0),
        entry(1, "WIDTH 64 -> 128", Status.CRASH, metric=None),
        entry(2, "DEPTH 3 -> 4", Status.DISCARD, metric=1.2, parent_metric=1.0),
        entry(3, "a prose description from an LLM agent", Status.KEEP, metric=0.5),
        entry(4, "DROPOUT 0.1 -> 0.2", Status.INTERRUPTED, metric=None),
    ]
    current = {"LR": 0.07, "WIDTH": 64, "DEPTH": 3}
    stats = arm_statistics(tuple(history), "min", current=current)
    mean = {arm: s.posterior(1.0)[0] for arm, s in stats.items()}
    assert mean[("LR", "down")] > 0 > mean[("WIDTH", "up")] and mean[("DEPTH", "up")] < 0
    assert mean[("DEPTH", "down")] > 0  # a loss one way hints at a gain the other way
    assert ("DROPOUT", "up") not in stats
    flipped = arm_statistics(tuple(history), "max", current=current)
    assert flipped[("LR", "down")].total < 0 and flipped[("DEPTH", "up")].total > 0
    assert reward_scale(history) == pytest.approx(0.2)


def test_learns_to_avoid_a_crashing_arm_and_to_follow_a_paying_one():
    history = [entry(i, f"WIDTH 64 -> {128 * 2 ** (i % 2)}", Status.CRASH, metric=None, parent=f"p{i}") for i in range(6)]
    history += [entry(10 + i, f"LR {0.1 / 2 ** i} -> {0.1 / 2 ** (i + 1)}", Status.KEEP, metric=1 - 0.1 * (i + 1),
                      parent=f"q{i}", parent_metric=1 - 0.1 * i) for i in range(3)]
    text = STANDIN.replace("LR = 0.1", "LR = 0.0125")
    picks = Counter(parse_description(BuiltinAgent(seed=s).propose(context(text, history, commit="c9")).description)[0].arm
                    for s in range(60))
    assert picks[("WIDTH", "up")] == 0
    (top, count), (_, second) = picks.most_common(2)
    assert top == ("LR", "down") and count >= 1.5 * second  # 13 arms: uniform would be ~5 each


# ------------------------------------------------------------------ a simulated optimisation


SIM_TEXT = '''"""A stand-in with two knobs that matter among many that do not."""
LR = 0.3  # learning rate (best: 0.03)
DEPTH = 3  # layers (best: 6)
WIDTH = 64  # hidden width (512 and up: out of memory)
DROPOUT = 0.1  # dropout probability
WEIGHT_DECAY = 0.1  # decoupled weight decay
BETA2 = 0.95  # second-moment decay
WARMUP_RATIO = 0.1  # fraction of steps warming up
GRAD_CLIP = 1.0  # gradient norm clip
BATCH_SIZE = 32  # sequences per step
PATTERN = "ab"  # block pattern
USE_BIAS = True  # linear biases
'''


def objective(text):
    c = {n: k.value for n, k in effective_constants(text).items()}
    if c["WIDTH"] >= 512:
        return None  # out of memory
    return (math.log(c["LR"]) - math.log(0.03)) ** 2 + 0.01 * (c["DEPTH"] - 6) ** 2


class RandomEdits:
    """The control: a uniformly random untried edit (same candidates, same no-repeat rule)."""

    name = "random"

    def __init__(self, seed=0):
        self.seed, self.calls = seed, 0

    def propose(self, ctx):
        self.calls += 1
        text = ctx.files["train.py"]
        tried = {e.key for h in ctx.tried_on_baseline for e in parse_description(h.description)}
        edits = [e for e in all_edits(text) if e.key not in tried]
        e = random.Random(f"{self.seed}:{ctx.seed}:{self.calls}").choice(edits)
        return Proposal(e.describe(), files={"train.py": apply_edits(text, [e])})


def optimise(agent, seed, steps=40, noise=0.02):
    """Play the coordinator: measure each proposal (objective + noise), keep it when it is better."""
    rng = random.Random(seed)
    text, commit, best = SIM_TEXT, "c0", objective(SIM_TEXT) + rng.gauss(0, noise)
    history = []
    for i in range(steps):
        p = agent.propose(context(text, history, commit, best, seed=seed * 1000 + i, noise=noise))
        new = p.files.get("train.py")
        true = objective(new) if new else None
        if p.error or true is None:
            status, metric = (Status.INVALID if p.error else Status.CRASH), None
        else:
            metric = true + rng.gauss(0, noise)
            status = Status.KEEP if metric < best else Status.DISCARD
        history.append(HistoryEntry(i, "w0", agent.name, p.description, status, metric, commit, best))
        if status == Status.KEEP:
            text, commit, best = new, f"c{i + 1}", metric
    return objective(text)


def test_bandit_beats_random_edits_on_a_synthetic_objective():
    seeds = range(8)
    bandit = [optimise(BuiltinAgent(seed=s), s) for s in seeds]
    control = [optimise(RandomEdits(seed=s), s) for s in seeds]
    start = objective(SIM_TEXT)
    print(f"start {start:.3f}  bandit mean {statistics.mean(bandit):.4f} median {statistics.median(bandit):.4f}"
          f"  random mean {statistics.mean(control):.4f} median {statistics.median(control):.4f}")
    assert statistics.mean(bandit) < 0.1 * start  # real progress: from 1.3 to near the optimum
    assert statistics.mean(bandit) < 0.6 * statistics.mean(control)
    assert statistics.median(bandit) < statistics.median(control)


# ------------------------------------------------------------------ what runs now, statuses, means


def test_never_proposes_an_edit_running_now_on_another_worker():
    lr_edits = [e.describe() for e in all_edits(STANDIN, only=["LR"], max_level=3)]
    assert len(lr_edits) == 6
    for seed in range(6):
        agent = BuiltinAgent(seed=seed, only=["LR"])
        p = agent.propose(context(in_flight=[running(i, d) for i, d in enumerate(lr_edits[:5])], seed=seed))
        assert p.description == lr_edits[5]
    everything = [running(i, d) for i, d in enumerate(lr_edits)]
    assert BuiltinAgent(only=["LR"]).propose(context(in_flight=everything)).error == NOTHING_LEFT
    elsewhere = [running(i, d, parent="other") for i, d in enumerate(lr_edits)]  # another baseline
    assert BuiltinAgent(only=["LR"]).propose(context(in_flight=elsewhere)).error is None
    half = [running(0, lr_edits[0])]
    done = [entry(1, lr_edits[1]), entry(2, lr_edits[2], Status.DUPLICATE)]
    for seed in range(10):  # finished (a duplicate too) and running: both count as tried
        p = BuiltinAgent(seed=seed, only=["LR"]).propose(context(history=done, in_flight=half, seed=seed))
        assert p.description not in lr_edits[:3]


def test_confirmations_are_not_edits_for_learning_or_for_tried():
    history = [entry(0, "confirm #7 (LR 0.1 -> 0.07)", Status.KEEP, metric=0.5),
               entry(1, "confirm #8: WIDTH 64 -> 128", Status.CRASH, metric=None)]
    assert arm_statistics(tuple(history)) == {}
    agent = BuiltinAgent(only=["LR"], max_level=1)
    seen = {agent.propose(context(history=history, in_flight=[running(9, "confirm #3: LR 0.1 -> 0.14")])).description
            for _ in range(2)}
    assert seen == {"LR 0.1 -> 0.14", "LR 0.1 -> 0.0714"}  # neither was blocked by a confirmation


def test_rejected_is_penalised_duplicate_ignored_pending_and_means_count():
    history = [
        entry(0, "LR 0.1 -> 0.07", Status.REJECTED, metric=None),
        entry(1, "WIDTH 64 -> 128", Status.DUPLICATE, metric=0.5),
        entry(2, "DEPTH 3 -> 4", Status.PENDING, metric=0.9, mean=0.9, runs=1),
        entry(3, "DROPOUT 0.1 -> 0.2", Status.DISCARD, metric=0.8, mean=1.2, runs=3, confirmed=True),
    ]
    stats = arm_statistics(tuple(history), "min")
    mean = {arm: s.posterior(1.0)[0] for arm, s in stats.items()}
    assert mean[("LR", "down")] < 0  # the referee refused it: like a crash
    assert ("WIDTH", "up") not in stats  # a duplicate teaches nothing
    assert mean[("DEPTH", "up")] > 0  # pending: its mean so far
    assert mean[("DROPOUT", "up")] < 0  # its mean (1.2) over three runs, not the lucky first (0.8)
    assert measured_delta(history[3]) == pytest.approx(0.2) and measured_delta(history[0]) is None
    assert reward_scale(history) == pytest.approx(0.15)  # median of |0.1| and |0.2|


# ------------------------------------------------------------------ re-applying a lost win


def test_reapply_sets_the_constants_of_the_lost_win_on_the_current_file():
    text = GPT_LIKE.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.03")  # the best moved the same line
    task = TaskSpec("gpt", ("trainer/train.py",), ("python",))
    r = Reapply(12, "MATRIX_LR 0.04 -> 0.05", "")
    p = BuiltinAgent(seed=3).propose(context(text, profile="gpu", task=task, reapply=r))
    assert p.error is None and p.description == "re-apply #12: MATRIX_LR 0.03 -> 0.05"
    new = p.files["trainer/train.py"]
    assert effective_constants(new, "gpu")["MATRIX_LR"].value == 0.05
    assert new == text.replace("MATRIX_LR = 0.03", "MATRIX_LR = 0.05")
    assert [e.key for e in parse_description(p.description)] == [("MATRIX_LR", "0.05")]  # learnable as usual


def test_reapply_of_several_edits_in_the_cpu_profile_skips_those_already_in():
    task = TaskSpec("gpt", ("trainer/train.py",), ("python",))
    r = Reapply(4, 're-apply #2: DEPTH 4 -> 6; TOTAL_BATCH_SIZE 2**13 -> 2**14; WINDOW_PATTERN "SSSL" -> "SSSL"', "")
    p = BuiltinAgent().propose(context(GPT_LIKE, profile="cpu", task=task, reapply=r))
    assert p.description == "re-apply #4: DEPTH 4 -> 6; TOTAL_BATCH_SIZE 2**13 -> 2**14"
    new = p.files["trainer/train.py"]
    assert effective_constants(new, "cpu")["DEPTH"].value == 6 and effective_constants(new, "gpu")["DEPTH"].value == 8
    assert "    TOTAL_BATCH_SIZE = 2**14" in new


def test_reapply_falls_back_to_the_diff_for_a_prose_description():
    diff = ("--- a/train.py\n+++ b/train.py\n@@ -2,2 +2,2 @@\n-LR = 0.1  # learning rate\n"
            "+LR = 0.05  # learning rate\n-WIDTH = 64  # hidden width\n+WIDTH = 96  # hidden width\n")
    p = BuiltinAgent().propose(context(reapply=Reapply(7, "lower lr, wider", diff)))
    assert p.error is None and p.description == "re-apply #7: LR 0.1 -> 0.05; WIDTH 64 -> 96"
    assert effective_constants(p.files["train.py"])["WIDTH"].value == 96


def test_reapply_that_cannot_be_done_is_an_error_not_a_random_edit():
    agent = BuiltinAgent()
    cases = {
        "missing": Reapply(1, "NO_SUCH 1 -> 2", ""),
        "already": Reapply(2, "LR 0.2 -> 0.1; DEPTH 2 -> 3", ""),
        "prose": Reapply(3, "rewrote the attention", "+    x = attention(q, k, v)\n"),
    }
    for what, r in cases.items():
        p = agent.propose(context(reapply=r))
        assert p.error and not p.files and "\n" not in p.error, what
        assert p.description == f"re-apply #{r.exp_id}"
    assert "already" in agent.propose(context(reapply=cases["already"])).error
    assert "NO_SUCH" in agent.propose(context(reapply=cases["missing"])).error


def test_reapply_already_running_or_tried_on_this_baseline_is_an_error():
    r = Reapply(5, "LR 0.2 -> 0.05", "")
    busy = context(reapply=r, in_flight=[running(9, "re-apply #5: LR 0.1 -> 0.05")])
    assert "already tried or runs" in BuiltinAgent().propose(busy).error
    done = context(reapply=r, history=[entry(8, "LR 0.1 -> 0.05")])
    assert BuiltinAgent().propose(done).error
    agent = BuiltinAgent()
    assert agent.propose(context(reapply=r)).error is None
    assert agent.propose(context(reapply=r)).error  # its own proposal is in flight
    assert agent.propose(context(reapply=r, commit="c1")).error is None  # a new baseline
