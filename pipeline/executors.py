"""Where shards of problems are searched: in this process, or on the actors of a Ray cluster.

Both executors take the same shards (index, problems, seed) and the same job, and yield each
shard's result as it finishes, in completion order; the caller (the driver) writes it. A job is a
picklable callable ``job(worker, problems, seed, progress) -> result``. A :class:`Worker` holds
what a search needs (one engine, one sandbox, the optional PPM), built once per process: once in
the stage for the local executor, once per actor on Ray. Ray only spreads work inside a stage;
DVC stays the DAG, and shard files, seeds and resume are the caller's business, not Ray's.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.config import (
    EXECUTOR_KINDS,
    EngineConfig,
    PPMScorerConfig,
    RayConfig,
    SandboxConfig,
    engine_config,
    group,
)
from pipeline.memory import keep_freed_memory
from pipeline.search.mcts import Problem


class ExecutorError(RuntimeError):
    """A cluster that cannot be used, or a shard that failed too often; always one line."""


def check_executor(kind: str, key: str) -> None:
    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"{key} must be one of {', '.join(EXECUTOR_KINDS)}, got {kind!r}")


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker builds what it holds; plain values, so it pickles to any node.

    Model folders are read by path: on a cluster every node must see them at that path.
    """

    engine_kind: str
    model_path: str
    engine_options: dict = field(default_factory=dict)
    sandbox: dict = field(default_factory=dict)  # pipeline.execution.sandbox.Sandbox's arguments
    ppm_path: str | None = None
    ppm_scorer: dict = field(default_factory=dict)  # the `ppm_scorer` group (PPMScorerConfig)

    @classmethod
    def from_params(
        cls, params: dict[str, Any], policy: Path, ppm: Path | None = None,
        engine: EngineConfig | None = None,
    ) -> WorkerSpec:  # fmt: skip
        """``engine`` (default: the `engine` group's) on ``policy``, the `sandbox` group's
        sandbox and, when given, the PPM scored as `ppm_scorer` says; folders as absolute
        paths, as every node must see them."""
        engine = engine or engine_config(params)
        sandbox = vars(group(params, "sandbox", SandboxConfig))
        scorer = vars(group(params, "ppm_scorer", PPMScorerConfig))
        return cls(engine.kind, str(Path(policy).resolve()), engine.options, sandbox,
                   str(Path(ppm).resolve()) if ppm is not None else None, scorer)  # fmt: skip


def build_scorer(path: str, options: dict):
    """The PPM of ``path``, scored on torch or through vLLM as the `ppm_scorer` group says."""
    config = PPMScorerConfig(**options)
    if config.kind == "vllm":
        from pipeline.models.ppm_vllm import VLLMScorer

        return VLLMScorer(path, config)
    from pipeline.models.ppm import PPM

    return PPM.load(path)


class Worker:
    """One engine, one sandbox and the optional PPM, used for every shard of one process."""

    def __init__(self, engine, sandbox, scorer=None) -> None:
        self.engine, self.sandbox, self.scorer = engine, sandbox, scorer

    @classmethod
    def build(cls, spec: WorkerSpec) -> Worker:
        from pipeline.execution.sandbox import Sandbox
        from pipeline.models.engines import make_engine

        for path in (spec.model_path, spec.ppm_path):
            if path is not None and not os.path.isdir(path):
                raise FileNotFoundError(
                    f"model folder {path} is not on {socket.gethostname()} "
                    "(every node must see data/models at the same path)"
                )
        # The engine first: a vLLM scorer's environment defaults (in process) must not
        # override what the engine's options ask for.
        engine = make_engine(spec.engine_kind, spec.model_path, **spec.engine_options)
        scorer = None
        try:
            if spec.ppm_path is not None:
                scorer = build_scorer(spec.ppm_path, spec.ppm_scorer)
            sandbox = Sandbox(**spec.sandbox)
        except BaseException:
            getattr(scorer, "close", lambda: None)()
            engine.close()
            raise
        return cls(engine, sandbox, scorer)

    def close(self) -> None:
        # The scorer before the engine: an in-process vllm engine's close tears down the
        # torch.distributed group that a vLLM scorer in the same process also uses.
        for part in (self.sandbox, self.scorer, self.engine):
            close = getattr(part, "close", None)
            if close is not None:
                close()


@dataclass(frozen=True)
class Shard:
    index: int
    problems: list[Problem]
    seed: int


Progress = Callable[[Any], None]


class Job(Protocol):
    def __call__(self, worker: Any, problems: Sequence[Problem], seed: int,
                 progress: Progress | None = None) -> Any: ...  # fmt: skip


class Executor(Protocol):
    def run(self, job: Job, shards: Iterable[Shard], progress: Progress | None = None
            ) -> Iterator[tuple[Shard, Any]]: ...  # fmt: skip

    def close(self) -> None: ...


class LocalExecutor:
    """Shards one after another in this process, on one worker built at the first shard."""

    def __init__(self, make_worker: Callable[[], Any]) -> None:
        self._make_worker = make_worker
        self._worker: Any = None

    def run(self, job: Job, shards: Iterable[Shard], progress: Progress | None = None
            ) -> Iterator[tuple[Shard, Any]]:  # fmt: skip
        for shard in shards:
            if self._worker is None:
                self._worker = self._make_worker()
            yield shard, job(self._worker, shard.problems, shard.seed, progress)

    def close(self) -> None:
        close = getattr(self._worker, "close", None)
        self._worker = None
        if close is not None:
            close()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ShardActor:
    """The Ray actor: builds its worker once, then runs one shard per call."""

    def __init__(self, spec: WorkerSpec) -> None:
        keep_freed_memory()  # an actor's process is not a stage's: set what stages/__init__ sets
        self.worker = Worker.build(spec)

    def run(self, job: Job, problems: list[Problem], seed: int) -> Any:
        return job(self.worker, problems, seed, None)


class RayExecutor:
    """Shards on a pool of actors; a shard whose actor dies goes to a fresh actor.

    Connecting happens in the constructor, so a missing cluster fails before any work. Results
    come back to the driver (no shared filesystem needed for outputs); the caller writes them.
    """

    def __init__(self, spec: WorkerSpec, config: RayConfig, log: Callable[[str], None] | None = None
                 ) -> None:  # fmt: skip
        self.spec, self.config = spec, config
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._ray = connect(config)
        self._actor_class = self._ray.remote(ShardActor).options(
            num_cpus=config.num_cpus, num_gpus=config.num_gpus, max_restarts=0, max_task_retries=0
        )
        self.actors: list[Any] = []

    def pool_size(self, shards: int) -> int:
        if self.config.num_actors:
            return min(self.config.num_actors, shards)
        resources = self._ray.cluster_resources()
        fits = (
            resources.get("GPU", 0) // self.config.num_gpus
            if self.config.num_gpus
            else resources.get("CPU", 0) // self.config.num_cpus
        )
        return max(1, min(int(fits), shards))

    def run(self, job: Job, shards: Iterable[Shard], progress: Progress | None = None
            ) -> Iterator[tuple[Shard, Any]]:  # fmt: skip
        ray = self._ray
        queue = deque(shards)
        if not queue:
            return
        while len(self.actors) < self.pool_size(len(queue)):
            self.actors.append(self._actor_class.remote(self.spec))
        idle = list(self.actors)
        job_ref = ray.put(job)
        running: dict[Any, tuple[Shard, Any]] = {}
        deaths: dict[int, int] = {}
        while queue or running:
            while queue and idle:
                shard, actor = queue.popleft(), idle.pop()
                running[actor.run.remote(job_ref, shard.problems, shard.seed)] = (shard, actor)
            [ref], _ = ray.wait(list(running), num_returns=1)
            shard, actor = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as error:
                idle.append(self._replace(actor, shard, error, deaths))
                queue.appendleft(shard)
                continue
            idle.append(actor)
            yield shard, result

    def _replace(
        self, actor: Any, shard: Shard, error: BaseException, deaths: dict[int, int]
    ) -> Any:
        """A fresh actor in place of a dead one, or an ExecutorError once the shard ran out of retries."""
        deaths[shard.index] = deaths.get(shard.index, 0) + 1
        reason = _death_reason(error)
        if deaths[shard.index] > self.config.max_retries:
            raise ExecutorError(
                f"shard {shard.index}: its Ray actor died {deaths[shard.index]} times "
                f"(ray.max_retries {self.config.max_retries}); last: {reason}"
            )
        self.log(f"shard {shard.index}: its actor died ({reason}); retrying on a new actor")
        self.actors.remove(actor)
        self._ray.kill(actor, no_restart=True)
        fresh = self._actor_class.remote(self.spec)
        self.actors.append(fresh)
        return fresh

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _death_reason(error: BaseException) -> str:
    """Why an actor died, in one line: the exception its __init__ raised (the last line of
    Ray's traceback text), else Ray's first line (a killed process, a lost node)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines()]
    lines = [line for line in lines if line]
    if getattr(error, "actor_init_failed", False) and lines:
        return lines[-1]
    return lines[0] if lines else type(error).__name__


def connect(config: RayConfig):
    """``ray``, connected to the configured cluster; a one-line ExecutorError when it cannot be."""
    import ray

    if ray.is_initialized():
        return ray
    address = config.address.strip()
    if address == "local":
        ray.init(include_dashboard=False, logging_level="warning", log_to_driver=False)
        return ray
    if address != "auto":
        _check_reachable(address, config.connect_timeout_s)
    try:
        ray.init(address=address, logging_level="warning", log_to_driver=False)
    except Exception as error:  # ray raises ConnectionError, RuntimeError or its own kinds
        raise ExecutorError(
            f"ray.address {address!r}: cannot connect ({_first_line(error)}); start the head with "
            "`ray start --head` or set ray.address"
        ) from None
    return ray


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast on a head that is not listening: ray.init would retry for a long while."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(
            f"ray.address {address!r}: expected local, auto, HOST:PORT or ray://HOST:PORT"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        raise ExecutorError(
            f"ray.address {address!r}: no Ray head is reachable there ({error.strerror or error}); "
            "start it with `ray start --head` or set ray.address"
        ) from None


def make_executor(
    kind: Literal["local", "ray"], spec: WorkerSpec, ray_config: RayConfig | None = None
) -> LocalExecutor | RayExecutor:
    """The executor the params name; Ray connects here, before any work."""
    check_executor(kind, "executor")
    if kind == "ray":
        return RayExecutor(spec, ray_config or RayConfig())
    return LocalExecutor(lambda: Worker.build(spec))
