"""One worker: sync to the assigned commit, get a proposal, commit it, run the task, report.

`Worker` is a plain class (unit tests drive it directly); `swarm.worker_actor.actor_class()` wraps
it as a thin Ray actor. A worker owns one checkout: a git worktree of the task repository (transport
"worktree": same machine as the coordinator) or a standalone repository fed by git bundles
(transport "bundle": nothing shared with the coordinator). It never writes the journal or the
best branch; it returns a `WorkerResult` and the coordinator decides. The task runs with an
allow-listed environment, inside the sandbox its spec names (swarm.sandbox: resolved at setup, on
the worker's own node).

Prefetch (swarm.prefetch): while an experiment's task runs, the agent already prepares the
worker's next proposal from the same best in a background thread; the next assignment uses it
(rebased onto the new best when the best moved). An agent outage (`AgentError`) is not an
experiment: `run` returns a result without a record, carrying the failed attempts' usage.
Not covered: deciding keep/discard (swarm.decisions), scheduling (swarm.coordinator).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from swarm.agents import AgentSpec, make_agent
from swarm.agents.base import AgentContext
from swarm.decisions import Assignment
from swarm import gitops
from swarm.claims import call as call_claims, content_hash
from swarm.errors import GitError
from swarm.pacing import prefetch_enabled
from swarm.prefetch import Attempt, Prefetcher, ask_agent, carry_over, prefetch_seed
from swarm import sandbox
from swarm.proc import kill_strays, read_end, run_process, tail_text
from swarm.records import ExperimentRecord, InFlight, Kind, Proposal, Status, Usage
from swarm.summary import metric_value, parse_summary, referee_rejection
from swarm.task import TaskSpec


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, as plain data (it travels to a Ray actor)."""

    name: str  # "w0", "w1", ...
    tag: str
    task: TaskSpec
    agent: AgentSpec
    checkout: str  # worktree path on the coordinator's node (transport "worktree")
    log_dir: str  # where <exp_id>.log files go (worktree transport)
    transport: str = "auto"  # "worktree" | "bundle" | "auto": worktree on the coordinator's node
    coordinator_node: str = ""  # Ray node id of the coordinator (for "auto")
    clone_dir: str = ""  # bundle transport: own repository here ("": under AUTORESEARCH_HOME)
    seed: int = 0
    env: Mapping[str, str] = field(default_factory=dict)  # extra task env: OMP_NUM_THREADS, profile
    prepare_data: bool = False  # call prepare.ensure_prepared at setup (the GPT task)
    profile: str | None = None
    source: str | None = None
    run_id: str = ""  # unique per run (the coordinator's run dir): marks this run's task processes
    prefetch: bool = True  # prepare the next proposal while the task runs (agents that support it)
    claims: Any = None  # swarm.claims: a Claims object or its actor handle (None: no duplicate check)
    sandbox: str = "auto"  # swarm.sandbox mode for the task: "auto" | "bwrap" | "off" (resolved at setup)

    @property
    def branch(self) -> str:
        return f"swarm/{self.tag}/{self.name}"

    @property
    def run_mark(self) -> str:
        return self.run_id or self.tag


@dataclass(frozen=True)
class WorkerResult:
    record: ExperimentRecord | None  # None: no experiment (the agent was unavailable: see agent_errors)
    bundle: bytes | None = None  # the experiment commit (bundle transport), None otherwise
    failure_log: str = ""  # log tail of a crash / timeout, for the agent's next context
    agent_errors: tuple = ()  # AgentFailure of each failed agent attempt behind it (their usage counts)
    log: bytes | None = None  # bundle transport: the experiment's log (its end, up to LOG_LIMIT), for the head


LOG_LIMIT = 4 << 20  # bytes of a remote experiment's log sent back to the head (its end)
FREE_RETRIES = 3  # times a free agent is asked again when its proposal repeats a change on the same parent


class Worker:
    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.transport = spec.transport if spec.transport != "auto" else "worktree"
        self.checkout = Path(spec.checkout)
        self.log_dir = Path(spec.log_dir)
        self.repo = None
        self.agent = None
        self.last_failure: str | None = None
        self.prefetcher = Prefetcher()
        self._prefetch_saw: str | None = None  # the last failure the pending prefetch's context held
        self.prefetch_on = False
        self.own_checkout = False  # set by setup: whether sync may remove ignored files too
        self._git_entry: tuple[Path, bytes] | None = None  # the checkout's .git file (a clone: .git/config) after sync
        self.sandbox = "off"  # the resolved sandbox mode ("bwrap" | "off"), set by setup

    # ---- lifecycle ------------------------------------------------------------------------

    def setup(self, same_node: bool = True) -> dict[str, Any]:
        """Prepare data on this node, open (or create) the checkout, build the agent.

        `same_node`: whether this process runs on the coordinator's node (decides transport "auto").
        """
        kill_strays(self.spec.run_mark, self.spec.name)
        self.sandbox, sandbox_warning = sandbox.resolve(self.spec.sandbox)  # on this node; ConfigError for "bwrap"
        mismatch = profile_mismatch(self.spec)
        if mismatch:  # nothing is prepared or started: the coordinator refuses the run
            return {"worker": self.spec.name, "host": socket.gethostname(), "transport": self.transport,
                    "profile_mismatch": mismatch}
        if self.spec.prepare_data:
            import prepare

            prepare.ensure_prepared(source=self.spec.source, profile=self.spec.profile, progress=False)
        if self.spec.transport == "auto":
            self.transport = "worktree" if same_node else "bundle"
        if self.transport == "bundle":
            if self.spec.clone_dir:
                self.checkout = Path(self.spec.clone_dir)
            else:
                from prepare.profiles import autoresearch_home

                self.checkout = autoresearch_home() / "swarm" / self.spec.tag / self.spec.name
            self.log_dir = self.checkout.parent / "logs"
            self.repo = gitops.ensure_clone_dir(self.checkout)
        else:
            self.repo = gitops.open_repo(self.checkout)
        # git clean -x (ignored leftovers of an agent or a task never reach the next experiment)
        # only in a checkout the swarm owns: its clone or a linked worktree, never a main checkout
        self.own_checkout = self.transport == "bundle" or gitops.is_linked_worktree(self.repo)
        self.agent = make_agent(self.spec.agent, seed=self.spec.seed)
        self.prefetch_on = prefetch_enabled(self.spec.prefetch, self.spec.agent.kind,
                                            getattr(self.agent, "prefetch", None))
        extra = {"sandbox_warning": sandbox_warning} if sandbox_warning else {}
        return {
            "worker": self.spec.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "agent": getattr(self.agent, "name", self.spec.agent.name),
            "transport": self.transport,
            "checkout": str(self.checkout),
            "prefetch": self.prefetch_on,
            "sandbox": self.sandbox,
            **extra,
        }

    def kill_task(self) -> None:
        """End the running task, if any (called concurrently with `run` on a clean stop)."""
        kill_strays(self.spec.run_mark, self.spec.name)

    def ping(self) -> str:
        return self.spec.name

    # ---- one experiment -------------------------------------------------------------------

    def run(self, a: Assignment, bundle: bytes | None = None, prefetch_next: bool = True) -> WorkerResult:
        """Run one experiment; every outcome (crash, timeout, invalid) is a record, not an exception.

        `bundle` (bundle transport) holds `a.parent` when this worker may not have it yet.
        `prefetch_next`: whether the coordinator may hand this worker another proposal (when the
        agent supports it, the next proposal is then prepared while the task runs). When the
        agent is unavailable (`AgentError`) the result has no record: nothing was run.
        """
        if self.repo is None:
            self.setup()
        started = time.time()
        base = dict(
            exp_id=a.exp_id,
            worker=self.spec.name,
            agent=getattr(self.agent, "name", self.spec.agent.name),
            kind=a.kind,
            parent=a.parent,
            parent_metric=a.parent_metric,
            started_at=a.started_at or started,
            lane=a.lane,
            seed=a.seed,
        )
        if bundle is not None:
            gitops.fetch_bundle(self.repo, bundle, f"refs/swarm/{self.spec.tag}/incoming")
        self._sync(a.parent)
        files = self._read_files()  # the mutable files at a.parent, before any edit

        extra: dict = {}  # how the proposal came about (agent_seconds, prefetched, proposed_on, proposed_at)
        usage = Usage()
        if a.kind in (Kind.BASELINE, Kind.CONFIRM):  # a measurement of an existing commit: no agent
            commit, description = a.parent, a.description or a.kind.value
        else:
            if a.kind == Kind.COMBINATION:
                attempt = None
                proposal = Proposal(a.description, files=dict(a.files))
            else:
                attempt = self._proposal_for(a, files)
            for retry in range(1, FREE_RETRIES + 2):
                if attempt is not None:
                    if attempt.proposal is None:  # the agent is unavailable: no experiment
                        return WorkerResult(None, agent_errors=(attempt.failure,))
                    if retry <= FREE_RETRIES and self._free_duplicate(a, files, attempt.proposal):
                        attempt = ask_agent(self.agent, self._context(a, files, seed=a.seed + retry))
                        continue  # a free agent is asked again rather than repeating work
                    proposal = attempt.proposal
                    extra = dict(agent_seconds=attempt.seconds, prefetched=attempt.prefetched,
                                 proposed_on=attempt.base_commit if attempt.base_commit != a.parent else "",
                                 proposed_at=attempt.finished_at)
                usage, description = proposal.usage, _one_line(proposal.description) or "(no description)"
                invalid, commit = self._apply(a, proposal, description)
                if invalid is not None:
                    self.last_failure = invalid
                    record = ExperimentRecord(
                        **base, commit=commit, description=description, status=Status.INVALID,
                        finished_at=time.time(), usage=usage, error=invalid, **extra,
                    )
                    return self._result(record, a)
                holder = self._claim(a, commit, description)
                if holder is None:
                    break
                self._restore(a.parent)  # the same change runs or ran on this parent: nothing runs
                if retry <= FREE_RETRIES and attempt is not None and self._is_free(a, proposal):
                    attempt = ask_agent(self.agent, self._context(a, files, seed=a.seed + retry))
                    continue  # another worker claimed it a moment ago: a free agent is asked again
                record = ExperimentRecord(
                    **base, commit=commit, description=description, status=Status.DUPLICATE,
                    finished_at=time.time(), usage=usage, error=f"the same change as #{holder} on this parent",
                    **extra,
                )
                return self._result(record, a)

        digest = content_hash(self._read_files())  # before the task runs (it could rewrite its own file)
        if prefetch_next and self.prefetch_on and not self.prefetcher.pending:
            self._prefetch_saw = self.last_failure  # what the prefetch's context knows of this worker's failures
            self.prefetcher.start(self.agent, self._context(a, files, seed=prefetch_seed(a.seed), reapply=False))
        record, failure_log = self._measure(a, base, commit, description)
        record = record.replace(usage=usage, content_hash=digest, **extra)
        self.last_failure = failure_log or None
        return self._result(record, a, failure_log)

    def _sync(self, commit: str) -> None:
        gitops.sync(self.repo, self.spec.branch, commit, ignored=self.own_checkout)
        dot_git = self.checkout / ".git"
        path = dot_git / "config" if dot_git.is_dir() else dot_git
        self._git_entry = (path, path.read_bytes())

    def _git_intact(self) -> bool:
        if self._git_entry is None:
            return True
        path, data = self._git_entry
        try:
            return path.read_bytes() == data
        except OSError:
            return False

    def _claim(self, a: Assignment, commit: str, description: str) -> int | None:
        """Claim this change on its parent; the exp id already holding it, or None."""
        if self.spec.claims is None:
            return None
        flight = InFlight(a.exp_id, self.spec.name, a.agent, a.parent, description)
        try:
            return call_claims(self.spec.claims, "claim", a.lane, a.parent, content_hash(self._read_files()), flight)
        except Exception:  # noqa: BLE001 - the claims are unreachable: run it unchecked rather than fail it
            return None

    def _is_free(self, a: Assignment, proposal: Proposal) -> bool:
        """A fresh proposal that cost nothing (the built-in agent): asking again is free."""
        return (self.spec.claims is not None and a.kind == Kind.PROPOSAL and a.reapply is None
                and not proposal.error and bool(proposal.files) and proposal.usage == Usage())

    def _free_duplicate(self, a: Assignment, files: dict[str, str], proposal: Proposal) -> bool:
        """A free proposal that repeats a change already running or done on this parent: worth
        asking again rather than recording a duplicate."""
        if not self._is_free(a, proposal):
            return False
        after = {**files, **{p: t for p, t in proposal.files.items() if p in files}}
        try:
            return call_claims(self.spec.claims, "taken", a.lane, a.parent, content_hash(after)) is not None
        except Exception:  # noqa: BLE001 - unreachable claims: no check
            return False

    def _in_flight(self, lane: str) -> tuple:
        if self.spec.claims is None:
            return ()
        try:
            return tuple(call_claims(self.spec.claims, "in_flight", lane))
        except Exception:  # noqa: BLE001 - the list is advice for the agent, never a reason to fail
            return ()

    def _read_files(self) -> dict[str, str]:
        return {p: _read_text(self.checkout / p) for p in self.spec.task.mutable_files}

    def _context(self, a: Assignment, files: dict[str, str], seed: int, reapply: bool = True) -> AgentContext:
        """The agent's context for `a` (`reapply=False`: a prefetch for the next, free proposal)."""
        task = self.spec.task
        program = _read_text(self.checkout / task.program_file) if task.program_file else ""
        return AgentContext(
            worker=self.spec.name,
            worktree=self.checkout,
            task=task,
            program=program,
            files=dict(files),
            baseline_commit=a.parent,
            baseline_metric=a.parent_metric,
            noise=a.noise,
            history=tuple(a.history),
            last_failure=self.last_failure,
            profile=self.spec.profile,
            seed=seed,
            in_flight=self._in_flight(a.lane),
            reapply=a.reapply if reapply else None,
        )

    def _proposal_for(self, a: Assignment, files: dict[str, str]) -> Attempt:
        """The proposal for assignment `a`: the prefetched one (fitted to `a.parent`), else a fresh one.

        The attempt's proposal is None when the agent is unavailable (`failure` says why; an
        outage hit by the prefetch ends here too: the worker waits). A prefetched proposal that no
        longer applies is asked again; its usage is added to the new attempt's.
        """
        if a.reapply is not None:  # re-apply a lost win: the agent is asked for exactly that (a prefetch waits)
            return ask_agent(self.agent, self._context(a, files, seed=a.seed))
        pre = self.prefetcher.take()
        wasted = Usage()
        if pre is not None:
            if pre.failure is not None:
                return pre
            stale = self.last_failure is not None and self.last_failure != self._prefetch_saw
            fitted = None if stale else carry_over(pre, a.parent, files)  # stale: it never saw the latest failure
            if fitted is not None:
                return dataclasses.replace(pre, proposal=fitted)
            wasted = pre.usage
        fresh = ask_agent(self.agent, self._context(a, files, seed=a.seed))
        if wasted == Usage():
            return fresh
        if fresh.failure is not None:
            return dataclasses.replace(fresh, failure=dataclasses.replace(fresh.failure, usage=fresh.failure.usage + wasted))
        return dataclasses.replace(fresh, proposal=dataclasses.replace(fresh.proposal, usage=fresh.proposal.usage + wasted))

    def _apply(self, a: Assignment, proposal: Proposal, description: str) -> tuple[str | None, str]:
        """Write and commit the proposal; returns (invalid reason or None, commit or "").

        A proposal naming files other than the mutable ones is invalid before anything is written.
        An agent that edits the checkout itself (files={}) is invalid when it touched git's own
        files or left git-ignored files (they would take part in the run without being in the
        commit); the checkout is restored either way.
        """
        mutable = list(self.spec.task.mutable_files)
        if proposal.error:
            self._restore(a.parent)
            return f"agent error: {proposal.error}", ""
        outside = sorted(set(proposal.files) - set(mutable))
        if outside:
            self._restore(a.parent)  # an agent that also edited the checkout: undo that too
            return f"proposal changes files other than {mutable}: {outside}", ""
        if not self._git_intact():
            self._restore(a.parent)
            return "the agent wrote into the checkout's .git", ""
        ignored = [p for p in gitops.ignored_paths(self.repo) if "__pycache__" not in Path(p).parts]
        if ignored:
            self._restore(a.parent)
            return f"the agent left git-ignored files (not part of the commit): {ignored[:5]}", ""
        for rel, text in proposal.files.items():
            target = self.checkout / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        message = f"{description}\n\n{gitops.exp_marker(self.spec.tag, a.exp_id)}{a.kind.value}, {self.spec.name})"
        try:
            commit = gitops.commit_all(self.repo, message)
            changed = gitops.changed_between(self.repo, a.parent, commit)
        except GitError as exc:  # e.g. the agent broke the checkout's git state
            self._restore(a.parent)
            return f"the proposal could not be committed: {exc}", ""
        if not changed:
            self._restore(a.parent)  # drop the empty commit
            return "the proposal changed nothing", ""
        outside = sorted(set(changed) - set(mutable))
        if outside:
            self._restore(a.parent)  # restore the worktree
            return f"changed files other than {mutable}: {outside}", commit
        return None, commit

    def _restore(self, commit: str) -> None:
        """Back to `commit` after an invalid proposal (the .git entry first, should the agent have
        overwritten it)."""
        if not self._git_intact():
            path, data = self._git_entry
            if path.is_dir():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self._sync(commit)

    def _measure(self, a: Assignment, base: dict, commit: str, description: str) -> tuple[ExperimentRecord, str]:
        task = self.spec.task
        log_path = self.log_dir / f"{a.exp_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(
            f"# exp {a.exp_id} {a.kind.value} on {self.spec.name} commit {commit}: {description}\n"
            f"# {' '.join(task.run_argv())}\n# sandbox: {self.sandbox}\n"
        )
        argv, env = task.run_argv(), self.task_env(a)
        if self.sandbox == "bwrap":
            argv, env = sandbox.wrap(argv, env, sandbox.task_policy(self.checkout, self._run_dirs(), env))
        result = run_process(argv, cwd=self.checkout, env=env, timeout=task.hard_timeout, log_path=log_path)
        summary = parse_summary(result.output_tail)  # the last 60 lines of the log: the summary block is at the end
        metric = metric_value(summary, task.metric)
        status, error = Status.KEEP, ""
        rejected = referee_rejection(result.returncode, result.output_tail) if task.referee else None
        if result.timed_out:
            status, error = Status.TIMEOUT, f"killed at the hard timeout ({task.hard_timeout:.0f} s)"
        elif rejected is not None:
            status, error = Status.REJECTED, f"rejected by the referee: {rejected}"
        elif result.returncode != 0:
            status, error = Status.CRASH, f"exit status {result.returncode}: {_last_line(result.output_tail)}"
        elif metric is None:
            status, error = Status.CRASH, f"no finite {task.metric} in the summary"
        peak = summary.get("peak_vram_mb")
        record = ExperimentRecord(
            **base,
            commit=commit,
            description=description,
            status=status,
            metric=metric if status == Status.KEEP else None,
            summary=summary,
            memory_gb=round(peak / 1024, 3) if isinstance(peak, float) else 0.0,
            finished_at=time.time(),
            task_seconds=result.seconds,
            error=error,
            log_path=str(log_path),
        )
        failure_log = tail_text(result.output_tail, 40) if status != Status.KEEP else ""
        return record, failure_log

    def _run_dirs(self) -> list[Path]:
        """What the sandbox hides from the task: the run's directory (journal, logs, the other
        workers' worktrees) and the directory holding this worker's logs and checkout."""
        return [p for p in (Path(self.spec.run_id) if self.spec.run_id else None, self.log_dir.parent) if p]

    def task_env(self, a: Assignment) -> dict[str, str]:
        """The allow-listed environment of this process (swarm.sandbox.task_env: GPU ids pass
        through, credentials never) + task env + swarm variables."""
        env: dict[str, str] = {}
        env.update(self.spec.task.env)
        env.update(self.spec.task.run_env())
        env.update(self.spec.env)
        env.update(
            {
                "AUTORESEARCH_TAG": self.spec.tag,
                "AUTORESEARCH_RUN": self.spec.run_mark,
                "AUTORESEARCH_WORKER": self.spec.name,
                "AUTORESEARCH_EXP_ID": str(a.exp_id),
                "AUTORESEARCH_KIND": a.kind.value,
                "AUTORESEARCH_SEED": str(a.seed),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.spec.profile:
            env["AUTORESEARCH_PROFILE"] = self.spec.profile
        if self.spec.source:
            env["AUTORESEARCH_SOURCE"] = self.spec.source
        return sandbox.task_env(os.environ, env)

    def _result(self, record: ExperimentRecord, a: Assignment, failure_log: str = "") -> WorkerResult:
        bundle, log = None, None
        if self.transport == "bundle" and record.commit and record.commit != a.parent:
            bundle = gitops.create_bundle(self.repo, record.commit, exclude=[a.parent])
        if self.transport == "bundle" and record.log_path:  # no shared file system: the log travels back
            log = read_end(record.log_path, LOG_LIMIT)
        return WorkerResult(record, bundle, failure_log, log=log)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return ""


def profile_mismatch(spec: WorkerSpec) -> str:
    """Why this node cannot run the GPT task at the run's profile ("" when it can): a gpu-profile
    run needs CUDA on every worker's node (a CPU worker would train a different model)."""
    if not spec.prepare_data or spec.profile != "gpu":
        return ""
    from prepare.profiles import _cuda_available

    if _cuda_available():
        return ""
    return (f"{spec.name} on {socket.gethostname()} has no CUDA GPU, but the run uses the gpu profile "
            "(a CPU worker in a GPU run): start workers only on GPU nodes, or run with --profile cpu")


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return _one_line(lines[-1], 160) if lines else "(no output)"


__all__ = ["Worker", "WorkerSpec", "WorkerResult"]
