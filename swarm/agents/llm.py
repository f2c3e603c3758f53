"""The LLM agent: any litellm model proposes an edit as SEARCH/REPLACE blocks.

One `propose` = one conversation: the context from `swarm.agents.prompt` (with `ctx.reapply`
set, a request to re-apply that lost win's change; the description is then labelled
`re-apply #N: ...`), the model's reply applied by `swarm.edits`; when it does not apply, the
error (which block, the closest lines) goes back as the next user message, up to
`max_edit_rounds` replies, then the proposal carries `error` (the worker records it `invalid`).
Usage (calls, tokens, cost) of every call is summed into `Proposal.usage`.

Transient API failures (rate limits, connection errors, timeouts, 5xx) are retried here with
exponential backoff, honouring Retry-After, within `num_retries` and `max_retry_wait`; after
that, or at once for an error retrying cannot fix, `AgentError` is raised with a one-line
message and `usage` attached: the worker catches it, waits and asks again later, so an outage
never ends the run. Errors that asking again cannot fix (bad key, no access, unknown model, a bad
request) carry `permanent=True`: the coordinator retires that worker instead. Keys come from the provider's usual env variables or from the variable
named by `api_key_env`; they are never put into prompts or records. Not covered: enforcing
`max_cost` (the coordinator does, from the usage), prefetching proposals.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from swarm.agents.base import AgentContext
from swarm.agents.prompt import DEFAULT_BUDGET, build_messages, reapply_description
from swarm.edits import apply_reply
from swarm.errors import AgentError, ConfigError, EditError
from swarm.records import Proposal, Usage

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_MAX_SINGLE_WAIT = 60.0


def import_litellm():
    """Import litellm without its network fetch of the model cost map at import time.

    litellm downloads its price table on import unless LITELLM_LOCAL_MODEL_COST_MAP is set; the
    bundled copy is what we want (offline clusters, tests). This setdefault is the one place the
    library touches os.environ, and it leaves a user's explicit choice alone.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _retry_after(exc: BaseException) -> float | None:
    headers: Any = getattr(exc, "headers", None)
    response = getattr(exc, "response", None)
    if not headers and response is not None:
        headers = getattr(response, "headers", None)
    try:
        value = headers.get("retry-after") if headers else None
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


class LLMAgent:
    """Proposes edits with a litellm model (`openai/gpt-5`, `anthropic/...`, `ollama/...`, or
    `openai/<name>` with `api_base` for an OpenAI-compatible server such as vLLM or llama.cpp)."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = 8192,
        context_tokens: int = DEFAULT_BUDGET,
        num_retries: int = 6,
        timeout: float = 600.0,
        price_in_per_mtok: float | None = None,
        price_out_per_mtok: float | None = None,
        max_edit_rounds: int = 3,
        seed: int | None = None,
        retry_base_delay: float = 2.0,
        max_retry_wait: float = 600.0,
        name: str | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ConfigError(
                f"LLM agent {model}: unknown option(s) {sorted(unknown)}; known: api_base, api_key_env, api_key, "
                "temperature, max_tokens, context_tokens, num_retries, timeout, price_in_per_mtok, "
                "price_out_per_mtok, max_edit_rounds, seed, retry_base_delay, max_retry_wait, name"
            )
        if max_edit_rounds < 1:
            raise ConfigError(f"LLM agent {model}: max_edit_rounds must be >= 1")
        self.model = model
        self.name = name or model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self._api_key = api_key  # prefer api_key_env: options travel in specs and configs
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.context_tokens = int(context_tokens)
        self.num_retries = max(0, int(num_retries))
        self.timeout = float(timeout)
        self.price_in = price_in_per_mtok
        self.price_out = price_out_per_mtok
        self.max_edit_rounds = int(max_edit_rounds)
        self.seed = seed
        self.retry_base_delay = float(retry_base_delay)
        self.max_retry_wait = float(max_retry_wait)
        self._sleep = time.sleep  # tests may replace it

    def __repr__(self) -> str:  # never shows the key
        return f"LLMAgent({self.model!r}, api_base={self.api_base!r})"

    # -- one proposal ---------------------------------------------------------------------------

    def propose(self, ctx: AgentContext) -> Proposal:
        messages = build_messages(ctx, self.context_tokens)
        current = dict(ctx.files)
        default = ctx.task.mutable_files[0]
        usage = Usage()
        description, last_error = "", ""
        for _ in range(self.max_edit_rounds):
            try:
                reply, call_usage = self.complete(messages, seed=ctx.seed)
            except AgentError as exc:
                exc.usage = usage + getattr(exc, "usage", Usage())  # type: ignore[attr-defined]
                raise
            usage = usage + call_usage
            try:
                if not reply.strip():
                    raise EditError("Your reply was empty. Send a Description line and SEARCH/REPLACE blocks.")
                desc, changed = apply_reply(current, reply, default)
            except EditError as exc:
                current.update(getattr(exc, "partial_files", {}))
                last_error = str(exc)
                messages = messages + [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": last_error},
                ]
                continue
            current.update(changed)
            description = desc or description or f"edit of {default}"
            if ctx.reapply is not None:
                description = reapply_description(ctx.reapply, description)
            files = {p: t for p, t in current.items() if t != ctx.files.get(p)}
            return Proposal(description=description, files=files, usage=usage)
        first = next((line for line in last_error.splitlines() if line.strip()), "the edit did not apply")
        description = description or "edit did not apply"
        if ctx.reapply is not None:
            description = reapply_description(ctx.reapply, description)
        return Proposal(
            description=description,
            files={},
            usage=usage,
            error=f"edit did not apply after {self.max_edit_rounds} round(s): {_one_line(first, 200)}",
        )

    # -- one model call, with retries ------------------------------------------------------------

    def _key(self) -> str | None:
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise AgentError(f"{self.name}: environment variable {self.api_key_env} (api_key_env) is not set",
                                 permanent=True)
            return value
        return self._api_key

    def _kwargs(self, messages: list[dict], seed: int) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "timeout": self.timeout,
            "num_retries": 0,  # retries are ours (below); this also turns off the SDK's own
            "drop_params": True,  # e.g. seed on providers without it
        }
        key = self._key()
        if key:
            kw["api_key"] = key
        if self.api_base:
            kw["api_base"] = self.api_base
        if self.temperature is not None:
            kw["temperature"] = self.temperature
        if self.max_tokens:
            kw["max_tokens"] = self.max_tokens
        if self.seed is not None:
            kw["seed"] = int(self.seed) + int(seed)
        return kw

    def _usage(self, litellm: Any, response: Any) -> Usage:
        u = getattr(response, "usage", None)
        tin = int(getattr(u, "prompt_tokens", 0) or 0)
        tout = int(getattr(u, "completion_tokens", 0) or 0)
        if self.price_in is not None or self.price_out is not None:
            cost = (tin * (self.price_in or 0.0) + tout * (self.price_out or 0.0)) / 1e6
        else:
            hidden = getattr(response, "_hidden_params", None) or {}
            cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
            if cost is None:
                try:
                    cost = litellm.completion_cost(completion_response=response)
                except Exception:  # noqa: BLE001 - a model litellm has no price for: cost unknown
                    cost = 0.0
        return Usage(calls=1, tokens_in=tin, tokens_out=tout, cost_usd=float(cost or 0.0))

    def _retryable(self, litellm: Any, exc: BaseException) -> bool:
        transient = tuple(
            getattr(litellm, n)
            for n in ("RateLimitError", "APIConnectionError", "Timeout", "InternalServerError", "ServiceUnavailableError")
            if hasattr(litellm, n)
        )
        if isinstance(exc, transient):
            return True
        code = _status(exc)
        return code is not None and (code in _RETRY_STATUS or code >= 500)

    def _permanent(self, litellm: Any, exc: BaseException) -> bool:
        """Asking again cannot help: bad key, no access, unknown model, a request the API refuses
        (a content-policy refusal is about this prompt only: not permanent)."""
        if isinstance(exc, getattr(litellm, "ContentPolicyViolationError", ())):
            return False
        permanent = tuple(
            getattr(litellm, n)
            for n in ("AuthenticationError", "PermissionDeniedError", "NotFoundError", "BadRequestError")
            if hasattr(litellm, n)
        )
        return isinstance(exc, permanent) or _status(exc) in (400, 401, 403, 404)

    def complete(self, messages: list[dict], seed: int = 0) -> tuple[str, Usage]:
        """One chat completion: (reply text, usage). Raises AgentError after retries."""
        litellm = import_litellm()
        waited, attempt = 0.0, 0
        while True:
            try:
                response = litellm.completion(**self._kwargs(messages, seed))
                text = response.choices[0].message.content or ""
                return text, self._usage(litellm, response)
            except AgentError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below; everything ends as AgentError
                code = _status(exc)
                key, message = self._key(), str(exc)
                if key and len(key) >= 4:  # some providers echo the key in their error
                    message = message.replace(key, "***")
                what = f"{type(exc).__name__}{f' {code}' if code else ''}: {_one_line(message, 200)}"
                if not self._retryable(litellm, exc):
                    if isinstance(exc, getattr(litellm, "ContextWindowExceededError", ())):
                        what += f" (lower the context_tokens option, now {self.context_tokens})"
                    raise AgentError(f"{self.name}: {what}", permanent=self._permanent(litellm, exc)) from None
                delay = _retry_after(exc)
                if delay is None:
                    delay = self.retry_base_delay * (2**attempt) * (0.5 + random.random() / 2)
                delay = min(delay, _MAX_SINGLE_WAIT)
                if attempt >= self.num_retries or waited + delay > self.max_retry_wait:
                    raise AgentError(f"{self.name}: gave up after {attempt + 1} attempt(s): {what}") from None
                self._sleep(delay)
                waited += delay
                attempt += 1
