"""The one error hierarchy of the project.

Library code raises these; only the CLI turns them into one-line user messages. Not for
experiment failures (a crashed or invalid experiment is a recorded result, not an exception).
"""


class SwarmError(Exception):
    """Base of every error the project raises on purpose. str(err) is a one-line user message."""


class ConfigError(SwarmError):
    """Bad configuration: a flag, a config file, a task spec, an agent spec."""


class DataError(SwarmError):
    """Missing, empty or corrupt data or tokenizer artifacts."""


class GitError(SwarmError):
    """A git operation the swarm depends on failed."""


class AgentError(SwarmError):
    """An agent could not produce a proposal (API outage, CLI failure).

    `permanent`: asking again will not help (bad key, unknown model, bad request): the worker
    slot is retired instead of waiting out an outage.
    """

    def __init__(self, *args: object, permanent: bool = False) -> None:
        super().__init__(*args)
        self.permanent = permanent


class EditError(SwarmError):
    """An edit could not be applied; the message is written to be shown to the model."""


class JournalError(SwarmError):
    """The journal is unreadable or inconsistent (beyond a torn last line)."""
