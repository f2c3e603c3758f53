"""The LLM agent against a local fake OpenAI-compatible server, and its prompt. No network."""

from __future__ import annotations

import time

import pytest
from fake_llm_server import FakeLLMServer, Reply

from swarm.agents import make_agent, parse_agent_spec
from swarm.agents.base import AgentContext
from swarm.agents.llm import LLMAgent
from swarm.agents.prompt import (
    IN_FLIGHT_ROWS,
    build_command_prompt,
    build_messages,
    messages_tokens,
    reapply_description,
)
from swarm.errors import AgentError, ConfigError
from swarm.records import HistoryEntry, InFlight, Reapply, Status
from swarm.task import TaskSpec

PATH = "trainer/train.py"
TRAIN = """\
# hyperparameters
DEPTH = 8  # number of layers
MATRIX_LR = 0.04  # Muon learning rate
WARMUP = 0.0


def main():
    print("training")
"""
PROGRAM = "# program.md\nLower val_bpb. Only trainer/train.py may change.\n"
GOOD = (
    "Description: raise the Muon learning rate\n\n"
    f"{PATH}\n```python\n<<<<<<< SEARCH\nMATRIX_LR = 0.04  # Muon learning rate\n=======\n"
    "MATRIX_LR = 0.05  # Muon learning rate\n>>>>>>> REPLACE\n```\n"
)
BAD = "Description: oops\n\n<<<<<<< SEARCH\nMATRIX_LR = 0.4\n=======\nMATRIX_LR = 0.5\n>>>>>>> REPLACE\n"
SECRET = "sk-test-very-secret-value-1234"


def make_ctx(tmp_path, history=(), last_failure=None, in_flight=(), reapply=None) -> AgentContext:
    task = TaskSpec("gpt-cpu", (PATH,), ("{python}", "-m", "trainer.train"), time_budget=20.0)
    return AgentContext(
        worker="w1",
        worktree=tmp_path,
        task=task,
        program=PROGRAM,
        files={PATH: TRAIN},
        baseline_commit="abc123def4567890",
        baseline_metric=1.2345,
        noise=0.0021,
        history=tuple(history),
        last_failure=last_failure,
        profile="cpu",
        seed=7,
        in_flight=tuple(in_flight),
        reapply=reapply,
    )


def entry(i: int, metric: float | None, status=Status.DISCARD, parent="old", desc=None, **more) -> HistoryEntry:
    return HistoryEntry(i, f"w{i % 4}", "builtin", desc or f"experiment number {i}", status, metric, parent, 1.3,
                        **more)


BASE = "abc123def4567890"
REAPPLY = Reapply(
    12, "MATRIX_LR 0.04 -> 0.05",
    f"--- a/{PATH}\n+++ b/{PATH}\n@@ -2,3 +2,3 @@\n DEPTH = 8  # number of layers\n"
    "-MATRIX_LR = 0.04  # Muon learning rate\n+MATRIX_LR = 0.05  # Muon learning rate\n WARMUP = 0.0\n",
)


def agent(server: FakeLLMServer, **options) -> LLMAgent:
    opts = dict(
        api_base=server.api_base,
        api_key="test",
        num_retries=2,
        timeout=10,
        retry_base_delay=0.01,
        price_in_per_mtok=1.0,
        price_out_per_mtok=2.0,
    )
    opts.update(options)
    return LLMAgent("openai/fake-model", **opts)


# -- prompt -----------------------------------------------------------------------------------------


def test_messages_hold_program_file_history_failure_baseline_noise(tmp_path):
    history = [entry(1, 1.25, Status.KEEP, parent="abc123def4567890", desc="deeper | wider")]
    history.append(entry(2, None, Status.CRASH, parent="abc123def4567890", desc="huge batch"))
    msgs = build_messages(make_ctx(tmp_path, history, last_failure="Traceback\nCUDA out of memory"))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"].startswith(PROGRAM.rstrip()) and "<<<<<<< SEARCH" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert TRAIN.rstrip() in user and "CUDA out of memory" in user
    assert "1.2345" in user and "0.0021" in user and "abc123def456" in user
    assert "| 1 | w1 | builtin | keep | 1.25 | -0.05 | 1 | cur | deeper / wider |" in user
    assert "| 2 | w2 | builtin | crash | - | - | - | cur | huge batch |" in user


def test_budget_drops_oldest_history_first_but_keeps_the_best(tmp_path):
    history = [entry(i, 1.3 - (0.05 if i == 3 else 0.0) + i * 1e-5) for i in range(1, 2001)]
    ctx = make_ctx(tmp_path, history, last_failure="x" * 50_000)
    msgs = build_messages(ctx, budget=6000)
    user = msgs[1]["content"]
    assert messages_tokens(msgs) <= 6100
    assert "| 3 |" in user  # the best one stays
    assert "| 2000 |" in user and "| 10 |" not in user  # newest kept, oldest dropped
    assert TRAIN.rstrip() in user and "xxxxx" in user  # file always, failure tail shortened


def test_command_prompt_points_at_program_file_and_asks_for_description(tmp_path):
    (tmp_path / "program.md").write_text(PROGRAM)
    text = build_command_prompt(make_ctx(tmp_path, [entry(1, 1.25)]))
    assert "Read program.md" in text and "Description:" in text and PATH in text
    assert TRAIN not in text  # the CLI reads the file itself


def test_noise_is_sigma_and_confirmed_results_show_their_mean(tmp_path):
    history = [
        entry(1, 1.20, Status.KEEP, parent=BASE, runs=3, mean=1.25, confirmed=True, desc="lower lr"),
        entry(2, 1.28, Status.PENDING, parent=BASE, desc="warmup"),
        entry(3, None, Status.REJECTED, parent=BASE, desc="peeked at val"),
        entry(4, 1.28, Status.DUPLICATE, parent=BASE, desc="warmup again"),
    ]
    user = build_messages(make_ctx(tmp_path, history))[1]["content"]
    assert "sigma = 0.0021" in user and "smaller than ~2 sigma (0.0042) is noise" in user
    assert "| 1 | w1 | builtin | keep | 1.25 +-0.0012 | -0.05 | 3 ok | cur | lower lr |" in user  # the mean
    assert "| 2 | w2 | builtin | pending | 1.28 | -0.02 | 1 | cur | warmup |" in user
    assert "| 3 | w3 | builtin | rejected | - | - | - | cur | peeked at val |" in user
    assert "| 4 | w0 | builtin | duplicate | 1.28 |" in user
    assert "rejected = the referee refused the run" in user and "duplicate = the same change" in user
    plain = build_messages(make_ctx(tmp_path, [entry(1, 1.25)]))[1]["content"]
    assert "rejected =" not in plain  # legend lines only for statuses present


def test_running_experiments_on_this_baseline_are_listed_not_to_repeat(tmp_path):
    running = [InFlight(20 + i, f"w{i}", "openai/m", BASE, f"idea {i} | with a bar") for i in range(40)]
    running.append(InFlight(99, "w9", "builtin", "older-best", "stale idea"))
    for text in (build_messages(make_ctx(tmp_path, in_flight=running))[1]["content"],
                 build_command_prompt(make_ctx(tmp_path, in_flight=running))):
        assert "Running now on other workers: do not repeat these" in text
        assert "- #20 on w0 (openai/m): idea 0 / with a bar" in text
        assert f"... and {40 - IN_FLIGHT_ROWS} more" in text and "stale idea" not in text
    quiet = build_messages(make_ctx(tmp_path))[1]["content"]
    assert "Running now" not in quiet


def test_reapply_asks_for_that_change_with_its_description_and_diff(tmp_path):
    msgs = build_messages(make_ctx(tmp_path, reapply=REAPPLY))
    user = msgs[1]["content"]
    assert "Re-apply a lost win" in user and "Experiment #12 improved the metric: MATRIX_LR 0.04 -> 0.05" in user
    assert "+MATRIX_LR = 0.05  # Muon learning rate" in user and "```diff" in user
    assert "Do NOT propose a new idea" in user and "Description: re-apply #12:" in user
    assert "Propose ONE experiment" not in user and TRAIN.rstrip() in user
    assert "<<<<<<< SEARCH" in msgs[0]["content"]  # the same reply format
    cmd = build_command_prompt(make_ctx(tmp_path, reapply=REAPPLY))
    assert "re-apply #12's change" in cmd and "+MATRIX_LR = 0.05" in cmd and "in place" in cmd
    assert reapply_description(REAPPLY, "Re-apply #12: lr up") == "Re-apply #12: lr up"
    assert reapply_description(REAPPLY, "lr  up") == "re-apply #12: lr up"
    assert reapply_description(REAPPLY, "") == "re-apply #12: MATRIX_LR 0.04 -> 0.05"
    assert reapply_description(REAPPLY, "re-apply #123: x") == "re-apply #12: re-apply #123: x"


def test_budget_keeps_reapply_and_running_and_drops_history_first(tmp_path):
    history = [entry(i, 1.3 + i * 1e-5) for i in range(1, 2001)]
    big = Reapply(5, "rewrite", "+x = 1\n" * 10_000)  # a huge diff is cut
    running = [InFlight(3000 + i, f"w{i}", "m", BASE, "d" * 300) for i in range(100)]
    ctx = make_ctx(tmp_path, history, last_failure="y" * 50_000, in_flight=running, reapply=big)
    msgs = build_messages(ctx, budget=12_000)
    user = msgs[1]["content"]
    assert messages_tokens(msgs) <= 12_100
    assert "more characters of the diff not shown" in user and "- #3000 on w0" in user
    assert "| 2000 |" in user and "| 10 |" not in user and TRAIN.rstrip() in user


# -- the agent against the fake server -------------------------------------------------------------


def test_good_edit_is_applied_with_usage_and_cost(tmp_path):
    with FakeLLMServer([GOOD]) as server:
        p = agent(server, temperature=0.5, seed=100).propose(make_ctx(tmp_path))
    assert p.error is None
    assert p.description == "raise the Muon learning rate"
    assert p.files == {PATH: TRAIN.replace("0.04", "0.05")}
    assert (p.usage.calls, p.usage.tokens_in, p.usage.tokens_out) == (1, 1000, 500)
    assert p.usage.cost_usd == pytest.approx(0.002)  # 1000 * $1/M + 500 * $2/M
    (req,) = server.requests
    assert req.body["model"] == "fake-model" and req.body["temperature"] == 0.5 and req.body["seed"] == 107
    assert req.messages[0]["role"] == "system" and PROGRAM.strip() in req.messages[0]["content"]


def test_bad_edit_is_reflected_then_fixed(tmp_path):
    with FakeLLMServer([BAD, GOOD]) as server:
        p = agent(server).propose(make_ctx(tmp_path))
    assert p.error is None and p.files[PATH] == TRAIN.replace("0.04", "0.05")
    assert p.usage.calls == 2 and p.usage.cost_usd == pytest.approx(0.004)
    second = server.requests[1].messages
    assert second[-2] == {"role": "assistant", "content": BAD}
    assert "block 1" in second[-1]["content"] and "3 | MATRIX_LR = 0.04" in second[-1]["content"]


def test_three_bad_replies_give_a_proposal_with_error(tmp_path):
    with FakeLLMServer(default=BAD) as server:
        p = agent(server).propose(make_ctx(tmp_path))
    assert len(server.requests) == 3
    assert p.files == {} and p.error and "after 3 round(s)" in p.error
    assert p.usage.calls == 3
    assert "matches no lines" in server.requests[2].messages[-1]["content"]


def test_partial_application_carries_over_rounds(tmp_path):
    two = (
        "Description: deeper and faster\n\n<<<<<<< SEARCH\nDEPTH = 8  # number of layers\n=======\n"
        "DEPTH = 10  # number of layers\n>>>>>>> REPLACE\n<<<<<<< SEARCH\nMATRIX_LR = 0.4\n=======\n"
        "MATRIX_LR = 0.5\n>>>>>>> REPLACE\n"
    )
    with FakeLLMServer([two, GOOD]) as server:
        p = agent(server).propose(make_ctx(tmp_path))
    assert p.error is None
    assert "DEPTH = 10" in p.files[PATH] and "MATRIX_LR = 0.05" in p.files[PATH]
    assert "Blocks 1 applied" in server.requests[1].messages[-1]["content"]


def test_rate_limit_then_success(tmp_path):
    with FakeLLMServer([Reply(status=429, headers={"Retry-After": "0"}), GOOD]) as server:
        p = agent(server).propose(make_ctx(tmp_path))
    assert p.error is None and len(server.requests) == 2
    assert p.usage.calls == 1


def test_slow_reply_times_out_and_is_retried(tmp_path):
    with FakeLLMServer([Reply(content=GOOD, delay=3.0), GOOD]) as server:
        start = time.monotonic()
        p = agent(server, timeout=0.5).propose(make_ctx(tmp_path))
        elapsed = time.monotonic() - start
    assert p.error is None and len(server.requests) == 2
    assert elapsed < 3.0


def test_persistent_server_error_raises_agent_error_fast(tmp_path):
    with FakeLLMServer(default=Reply(status=500)) as server:
        start = time.monotonic()
        with pytest.raises(AgentError, match="gave up after 3 attempt") as info:
            agent(server).propose(make_ctx(tmp_path))
        assert time.monotonic() - start < 10
    assert len(server.requests) == 3
    assert "\n" not in str(info.value)
    assert not info.value.permanent  # an outage: the worker waits and asks again


def test_retry_wait_cap_ends_retries_early(tmp_path):
    with FakeLLMServer(default=Reply(status=503)) as server:
        with pytest.raises(AgentError):
            agent(server, num_retries=10, retry_base_delay=0.2, max_retry_wait=0.3).propose(make_ctx(tmp_path))
    assert len(server.requests) <= 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_permanent_error_is_not_retried(tmp_path, status):
    with FakeLLMServer(default=Reply(status=status)) as server:
        with pytest.raises(AgentError, match=str(status)) as info:
            agent(server).propose(make_ctx(tmp_path))
    assert len(server.requests) == 1
    assert info.value.permanent  # bad key / no access / unknown model / bad request: retire the worker


def test_keys_go_in_headers_never_in_prompts(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "-openai")
    with FakeLLMServer([GOOD]) as server:
        a = agent(server, api_key=None, api_key_env="FAKE_LLM_KEY")
        p = a.propose(make_ctx(tmp_path, last_failure="Traceback: boom"))
    assert p.error is None
    (req,) = server.requests
    assert req.headers.get("Authorization") == f"Bearer {SECRET}"
    assert SECRET not in str(req.body) and SECRET not in repr(a) and SECRET not in str(p)


def test_missing_key_env_is_an_agent_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with FakeLLMServer([GOOD]) as server:
        with pytest.raises(AgentError, match="NO_SUCH_KEY_VAR") as info:
            agent(server, api_key=None, api_key_env="NO_SUCH_KEY_VAR").propose(make_ctx(tmp_path))
    assert server.requests == [] and info.value.permanent


def test_make_agent_builds_it_and_rejects_unknown_options():
    a = make_agent(parse_agent_spec("openai/gpt-x", {"temperature": 0.2, "max_edit_rounds": 2}))
    assert isinstance(a, LLMAgent) and a.name == "openai/gpt-x" and a.max_edit_rounds == 2
    with pytest.raises(ConfigError, match="unknown option"):
        LLMAgent("openai/gpt-x", temprature=0.2)


def test_cost_from_litellm_price_table_or_zero_when_unknown(tmp_path):
    with FakeLLMServer([GOOD, GOOD]) as server:
        base = dict(api_base=server.api_base, api_key="test", num_retries=0, timeout=10)
        known = LLMAgent("openai/gpt-4o-mini", **base).propose(make_ctx(tmp_path))
        unknown = LLMAgent("openai/no-such-model-xyz", **base).propose(make_ctx(tmp_path))
    assert known.usage.cost_usd > 0
    assert unknown.usage.cost_usd == 0.0 and unknown.usage.tokens_in == 1000


def test_llm_agent_reapplies_and_labels_the_description(tmp_path):
    with FakeLLMServer([GOOD]) as server:
        p = agent(server).propose(make_ctx(tmp_path, reapply=REAPPLY))
    assert p.error is None and p.files == {PATH: TRAIN.replace("0.04", "0.05")}
    assert p.description == "re-apply #12: raise the Muon learning rate"
    assert "Re-apply a lost win" in server.requests[0].messages[-1]["content"]
    with FakeLLMServer(default=BAD) as server:
        failed = agent(server, max_edit_rounds=1).propose(make_ctx(tmp_path, reapply=REAPPLY))
    assert failed.error and failed.description == "re-apply #12: edit did not apply"


def test_command_agent_labels_a_reapply(tmp_path):
    import sys

    from swarm.agents.command import CommandAgent

    script = tmp_path / "cli.py"
    script.write_text("import sys\nassert 'Re-apply a lost win' in sys.argv[-1]\nprint('Description: lr up')\n")
    p = CommandAgent([sys.executable, str(script)], timeout=30).propose(make_ctx(tmp_path, reapply=REAPPLY))
    assert p.error is None and p.description == "re-apply #12: lr up"
