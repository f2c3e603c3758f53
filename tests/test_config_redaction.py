"""What the journal stores of a run's configuration: everything needed to resume, no secret."""

from swarm.agents import AgentSpec
from swarm.config import agent_from_dict, agent_to_dict, task_from_dict, task_to_dict
from swarm.task import TaskSpec


def test_agent_options_keep_settings_and_drop_secret_values_at_any_depth():
    spec = AgentSpec("llm", "openai/x", {
        "api_key": "sk-live", "token": "t", "client_secret": "c",
        "api_key_env": "MY_KEY", "max_tokens": 512, "price_in_per_mtok": 1.25,
        "env": {"ANTHROPIC_API_KEY": "sk-ant", "PATH": "/bin", "nested": {"password": "p", "depth": 2}},
    })
    stored = agent_to_dict(spec)
    text = repr(stored)
    for secret in ("sk-live", "'t'", "sk-ant", "'c'", "'p'"):
        assert secret not in text
    back = agent_from_dict(stored)
    assert back.options["api_key_env"] == "MY_KEY"  # the variable's name survives a resume
    assert back.options["max_tokens"] == 512 and back.options["price_in_per_mtok"] == 1.25
    assert back.options["env"] == {"PATH": "/bin", "nested": {"depth": 2}}


def test_task_env_is_stored_without_credentials():
    task = TaskSpec("t", ("train.py",), ("python", "train.py"), env={"HF_TOKEN": "hf-x", "MODE": "fast"})
    stored = task_to_dict(task)
    assert "hf-x" not in repr(stored)
    assert task_from_dict(stored).env == {"MODE": "fast"}
