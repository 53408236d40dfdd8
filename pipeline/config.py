"""Every params.yaml group as a typed, validated config (docs/params.md): the one home of each
group's keys, defaults and ranges, and of :func:`group`, the one way to build them.

A key params.yaml misspells, a value of the wrong type, or one out of its range stops the stage
with one line that names it as params.yaml spells it (``mcts.n_children must be >= 1, got 0``).
Types are checked by :func:`group` from the annotations; ranges by each class's
``__post_init__``, so a config built in code is checked too.

This module imports nothing heavy: every stage reads it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

T = TypeVar("T")

ENGINE_KINDS = ("transformers", "vllm", "openai")
EXECUTOR_KINDS = ("local", "ray")
PROMPT_STYLES = ("sft", "few_shot")
TINY_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "seed")


class ParamsError(ValueError):
    pass


class OutOfRange(ParamsError):
    """A value its type allows but its group does not; :func:`group` names it by its place in
    params.yaml (a round's `mcts` overrides, the three training groups sharing one class)."""

    def __init__(self, where: str, key: str, requirement: str, value: Any) -> None:
        self.key, self.requirement, self.value = key, requirement, value
        super().__init__(f"{where}.{key} must be {requirement}, got {value!r}")

    def at(self, where: str) -> ParamsError:
        return ParamsError(f"{where}.{self.key} must be {self.requirement}, got {self.value!r}")


# --------------------------------------------------------------------------- range checks


def _require(config: Any, key: str, ok: bool, requirement: str) -> None:
    if not ok:
        raise OutOfRange(config.GROUP, key, requirement, getattr(config, key))


def _at_least(config: Any, low: float, *keys: str, optional: bool = False) -> None:
    """Counts and sizes: ``>= low`` (``optional``: null allowed, meaning "no cap")."""
    for key in keys:
        value = getattr(config, key)
        if optional and value is None:
            continue
        _require(
            config,
            key,
            _is_number(value) and value >= low,
            f">= {low:g}" + (" or null" if optional else ""),
        )


def _positive(config: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        _require(config, key, _is_number(value) and value > 0, "> 0")


def _fraction(config: Any, *keys: str) -> None:
    """Shares of problems or steps: in [0, 1) (1 would leave nothing on the other side)."""
    for key in keys:
        value = getattr(config, key)
        _require(config, key, _is_number(value) and 0 <= value < 1, "in [0, 1)")


def _choices(config: Any) -> None:
    """Every ``Literal`` field holds one of its values (group() checks YAML; this, code)."""
    for key, hint in typing.get_type_hints(type(config)).items():
        if typing.get_origin(hint) is Literal:
            allowed = typing.get_args(hint)
            value = getattr(config, key)
            _require(config, key, value in allowed, "one of " + ", ".join(map(repr, allowed)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class SeedsConfig:
    """`seeds`: where the problems come from and how they split (pipeline.problems.sources)."""

    GROUP: ClassVar[str] = "seeds"

    source: str = (
        "generated"  # pipeline.problems.sources.GENERATED, a .jsonl/.json/.parquet path, or hf:...
    )
    n: int = 400  # problems to generate, or the most to keep from another source (0: all)
    seed: int = 0
    test_fraction: float = 0.2
    validation_fraction: float = 0.0  # held out for tuning, so that `test` is only reported
    levels: list[int] | None = None  # generator difficulty levels (null: all, 1-5)
    columns: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _at_least(self, 0, "n")
        _fraction(self, "test_fraction", "validation_fraction")
        _require(
            self, "validation_fraction",
            self.test_fraction + self.validation_fraction < 1,
            f"< 1 - test_fraction ({1 - self.test_fraction:g})",
        )  # fmt: skip

    def options(self) -> dict[str, Any]:
        """Options of :func:`pipeline.problems.sources.read_problems` for this source."""
        options: dict[str, Any] = {
            "n": self.n,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "validation_fraction": self.validation_fraction,
        }
        # Passed as given: read_problems checks them and names the option in its error.
        if self.source == "generated":
            options["levels"] = self.levels
        else:
            options["columns"] = self.columns or None
        return options


@dataclass(frozen=True)
class ModelConfig:
    """`model`: the base policy (pipeline.models.base.prepare_base_model)."""

    GROUP: ClassVar[str] = "model"

    base: str = "smollm2"  # `smollm2`, `tiny`, a local HF folder, or a Hub id
    tiny: dict[str, int] = field(
        default_factory=lambda: {
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 128,
        }
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tiny or {}) - set(TINY_KEYS))
        if unknown:
            raise ParamsError(
                f"model.tiny: unknown key(s) {', '.join(unknown)}; known: {', '.join(TINY_KEYS)}"
            )


@dataclass(frozen=True)
class SandboxConfig:
    """`sandbox`: pipeline.execution.sandbox.Sandbox's arguments."""

    GROUP: ClassVar[str] = "sandbox"

    workers: int = 2
    timeout_s: float = 10.0
    memory_mb: int = 1024

    def __post_init__(self) -> None:
        _at_least(self, 1, "workers", "memory_mb")
        _positive(self, "timeout_s")


@dataclass(frozen=True)
class EngineConfig:
    """`engine`: which engine generates text, and that engine's options (flat beside `kind` in
    params.yaml). vllm's own options are typed by :class:`VLLMOptions`; any other key goes to
    ``vllm.LLM`` as it is. The transformers and openai engines check their options' names when
    they are built (pipeline.models.engines)."""

    GROUP: ClassVar[str] = "engine"

    kind: Literal["transformers", "vllm", "openai"] = "transformers"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choices(self)


@dataclass(frozen=True)
class VLLMOptions:
    """The `engine` keys this project sets for vLLM (the rest pass through to ``vllm.LLM``)."""

    GROUP: ClassVar[str] = "engine"

    dtype: str = "auto"  # bf16 on GPUs and CPUs with bf16 instructions, else fp32 (resolve_dtype)
    enforce_eager: bool = True  # torch.compile adds ~100 s of start-up for ~10% speed on CPU
    max_model_len: int = 2048  # prompt + all steps of a trajectory; bounds the KV blocks per row
    kv_cache_gib: float = 2.0  # KV cache size (what VLLM_CPU_KVCACHE_SPACE sets on CPU)
    tensor_parallel_size: int = 1
    seed: int = 0  # engine-wide seed; sampling itself is seeded per request
    in_process: bool = (
        True  # engine core in this process; GPUs with tensor_parallel_size > 1: false
    )
    threads: int | None = None  # CPU threads for the model (None: every core this process may use)
    progress: bool = False  # vLLM's own progress bar per call

    def __post_init__(self) -> None:
        _at_least(self, 1, "max_model_len", "tensor_parallel_size")
        _at_least(self, 1, "threads", optional=True)
        _positive(self, "kv_cache_gib")


@dataclass(frozen=True)
class PPMScorerConfig:
    """`ppm_scorer`: how rollouts and evaluation score texts with the PPM (pipeline.models):
    `torch` (pipeline.models.ppm.PPM, a padded batch) or `vllm` (the PPM run as a pooling
    model, whose prefix cache serves the long prefixes sibling texts share:
    benchmarks/bench_ppm.py). The other keys are vllm's."""

    GROUP: ClassVar[str] = "ppm_scorer"

    kind: Literal["torch", "vllm"] = "torch"
    dtype: str = "auto"  # as engine.dtype; bf16 scores agree with fp32 torch to ~1e-2
    kv_cache_gib: float = 1.0  # prefix cache of the scored texts (a second engine's KV cache)
    enforce_eager: bool = True
    threads: int | None = None  # CPU threads (None: every core this process may use)
    in_process: bool = True  # engine core in this process, as the vllm engine's default

    def __post_init__(self) -> None:
        _positive(self, "kv_cache_gib")
        _at_least(self, 1, "threads", optional=True)
        _choices(self)


def engine_config(params: dict[str, Any], where: str = "engine") -> EngineConfig:
    """The `engine` group: its kind checked, and vllm's own options typed and in range.
    ``where`` names the group in errors (`evaluate.engine` holds one of its own)."""
    values = params.get("engine") or {}
    if not isinstance(values, dict):
        raise ParamsError(f"params group {where!r} must be a mapping, got {values!r}")
    options = {key: value for key, value in values.items() if key != "kind"}
    kind = group(
        {"engine": {"kind": values.get("kind", EngineConfig.kind)}}, "engine", EngineConfig,
        where=where,
    ).kind  # fmt: skip
    if kind == "vllm":
        known = {f.name for f in dataclasses.fields(VLLMOptions)}
        vllm_options = {"engine": {k: v for k, v in options.items() if k in known}}
        group(vllm_options, "engine", VLLMOptions, where=where)
    return EngineConfig(kind, options)


@dataclass(frozen=True)
class RayConfig:
    """`ray`: the cluster and what each actor asks of it (pipeline.executors)."""

    GROUP: ClassVar[str] = "ray"

    # `local`: start a one-machine cluster inside the stage; `auto`: the cluster that
    # `ray start` runs on this machine; `HOST:PORT` (a head's GCS) or `ray://HOST:10001`.
    address: str = "local"
    num_actors: int = 0  # 0: as many as the cluster's CPUs (or GPUs) fit, at most one per shard
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor: 1 for one vllm engine per GPU
    max_retries: int = 2  # times a shard is resubmitted after its actor died
    connect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _require(self, "address", isinstance(self.address, str) and bool(self.address.strip()),
                 "a non-empty string")  # fmt: skip
        _at_least(self, 0, "num_actors", "max_retries", "num_cpus", "num_gpus")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise ParamsError("ray.num_cpus and ray.num_gpus cannot both be 0")
        _positive(self, "connect_timeout_s")


@dataclass(frozen=True)
class MCTSConfig:
    """`mcts`: the search; defaults are the paper's (docs/algorithm.md)."""

    GROUP: ClassVar[str] = "mcts"

    rollouts: int = 8
    n_children: int = 4
    c_puct: float = 2.0
    temperature: float = 0.7
    top_p: float = 1.0
    max_depth: int = 8
    errors_threshold: int = 2
    max_new_tokens: int = 256
    prompt_style: Literal["sft", "few_shot"] = "sft"
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least(
            self, 1, "rollouts", "n_children", "max_depth", "errors_threshold", "max_new_tokens"
        )
        _at_least(self, 0, "c_puct", "temperature")
        _require(self, "top_p", _is_number(self.top_p) and 0 < self.top_p <= 1, "in (0, 1]")
        _choices(self)


@dataclass(frozen=True)
class RoundConfig:
    """One entry `rounds.rN` of the self-evolution schedule (pipeline.search.rounds)."""

    GROUP: ClassVar[str] = "rounds.rN"

    policy: str = "base"  # base, warm_start or rN
    ppm: str = "none"  # none (terminal-guided) or rN (PPM-augmented)
    previous: str = "r0"  # the round whose per-problem status this one continues
    rollouts: int = 8
    unsolved_rollouts: int | None = None  # budget for problems unsolved in every earlier round
    prompt_style: Literal["sft", "few_shot"] = "sft"
    problems: int | None = None  # cap on training problems searched this round
    skip_solved: bool = False  # leave out problems an earlier round solved, before the cap
    mcts: dict[str, Any] = field(default_factory=dict)  # this round's overrides of `mcts`

    def __post_init__(self) -> None:
        _at_least(self, 1, "rollouts")
        _at_least(self, 1, "unsolved_rollouts", "problems", optional=True)
        _choices(self)


@dataclass(frozen=True)
class CurriculumConfig:
    """`curriculum`: which problems teach the step format in the warm start (their reference
    solutions) and whether the rounds leave them out, so that the rounds search only problems
    whose solutions the policy never saw (pipeline.search.rounds.bootstrap_problem_ids)."""

    GROUP: ClassVar[str] = "curriculum"

    bootstrap_levels: list[int] | None = None  # difficulty levels of the bootstrap set (null: all)
    bootstrap_problems: int = 0  # at most this many bootstrap problems (0: all of those levels)
    rounds_exclude_bootstrap: bool = False

    def __post_init__(self) -> None:
        _at_least(self, 0, "bootstrap_problems")


@dataclass(frozen=True)
class RolloutConfig:
    """`rollout`: how a round's search is cut into shards and where they run."""

    GROUP: ClassVar[str] = "rollout"

    shard_size: int = 16
    executor: Literal["local", "ray"] = "local"  # this process, or actors of the `ray` cluster

    def __post_init__(self) -> None:
        _at_least(self, 1, "shard_size")
        _choices(self)


@dataclass(frozen=True)
class SFTConfig:
    """`sft`: the SFT set (docs/algorithm.md)."""

    GROUP: ClassVar[str] = "sft"

    per_problem: int = 2

    def __post_init__(self) -> None:
        _at_least(self, 1, "per_problem")


@dataclass(frozen=True)
class PairsConfig:
    """`pairs`: which preference pairs are kept, and which problems' pairs are held out."""

    GROUP: ClassVar[str] = "pairs"

    min_margin: float = 0.5
    min_edit: int = 20
    heldout_fraction: float = 0.1

    def __post_init__(self) -> None:
        _at_least(self, 0, "min_margin", "min_edit")
        _fraction(self, "heldout_fraction")


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of one training run (`train_ppm`; the base of `warm_start` and `train_policy`).

    ``batch_size`` is per device and per micro-batch; one optimizer step sees
    ``batch_size * grad_accum * processes`` examples (pairs, for the PPM).
    """

    GROUP: ClassVar[str] = "train_ppm"

    epochs: int = 1
    learning_rate: float = 1e-5
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024  # tokens; SFT cuts the tail of a response, the PPM the head of a text
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 turns clipping off
    seed: int = 0
    # bfloat16 autocast, weights kept and saved in fp32; `auto`: where the machine computes bf16
    # natively (a GPU, or a CPU with AVX-512 BF16 / AMX / Arm bf16: pipeline.models.hardware)
    bf16: bool | Literal["auto"] = False
    gradient_checkpointing: bool = False
    max_steps: int | None = None  # cap on optimizer steps, after the epochs are counted
    heldout_fraction: float = 0.1  # share of problems held out for the before/after loss (SFT)
    # Learning rate of the embedding rows of new tokens (the step markers) in the run that adds
    # them: fresh rows must travel far in few steps. When it exceeds `learning_rate`, the old
    # rows of the embedding matrices stay frozen for that run (pipeline.models.train.sft).
    new_token_learning_rate: float = 5e-3
    # Minutes between saves of the whole training state (pipeline.models.train.checkpoint), so
    # a killed run resumes; a run shorter than this never writes one. 0: never.
    checkpoint_minutes: float = 10.0

    def __post_init__(self) -> None:
        _at_least(self, 1, "epochs", "batch_size", "grad_accum", "max_length")
        _at_least(self, 0, "checkpoint_minutes")
        _at_least(self, 1, "max_steps", optional=True)
        _positive(self, "learning_rate", "new_token_learning_rate")
        _at_least(self, 0, "weight_decay", "max_grad_norm")
        _fraction(self, "warmup_ratio", "heldout_fraction")
        _require(self, "bf16", isinstance(self.bf16, bool) or self.bf16 == "auto",
                 "true, false or 'auto'")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainPolicyConfig(TrainConfig):
    """`train_policy`: the training knobs plus where each round starts from."""

    GROUP: ClassVar[str] = "train_policy"

    from_base: bool = False  # true: every round fine-tunes the base model, not the last policy


@dataclass(frozen=True)
class WarmStartConfig(TrainConfig):
    """`warm_start`: the training knobs plus the switch and the evaluation size."""

    GROUP: ClassVar[str] = "warm_start"

    enabled: bool = True
    eval_problems: int = 0  # held-out problems for greedy pass@1 and pass@N (0: no evaluation)
    eval_samples: int = 8  # N of pass@N and maj@N (0: greedy only)

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, 0, "eval_problems", "eval_samples")


@dataclass(frozen=True)
class EvalConfig:
    """`evaluate`: the held-out evaluation (pipeline.evaluation.evaluate and .sharded)."""

    GROUP: ClassVar[str] = "evaluate"

    source: str = "seeds"  # `seeds` (a split of the seed problems) or any problem source
    split: Literal["test", "validation"] = "test"  # with source `seeds`: tune on validation only
    problems: int = 50  # held-out problems to evaluate (0 = all)
    samples: int = 8  # N of pass@N, maj@N and best-of-N (0: greedy and PPM-guided search only)
    temperature: float = 0.7
    mcts_rollouts: int = 4  # PPM-guided search budget per problem (0: off)
    mcts_children: int = 4
    vote_top: int = 3  # answer of PPM-guided MCTS: vote among the top-scoring trajectories
    # The reference's evaluation: this many independent PPM-guided searches per problem, each
    # giving its best-scored answer, and a majority vote over them (0: off).
    mcts_runs: int = 0
    mcts: dict = field(default_factory=dict)  # overrides of the `mcts` group for evaluation
    # A whole `engine` group for evaluation ({}: the `engine` group), e.g. {kind: transformers}
    # where starting a vLLM engine costs more than a few held-out problems take.
    engine: dict = field(default_factory=dict)
    # Per-round overrides of these keys, e.g. {r4: {samples: 4}}: every method in the last round
    # only. Here rather than in `rounds.rN`, so that changing them re-runs no rollout.
    rounds: dict = field(default_factory=dict)
    shard_size: int = 64  # problems per shard in the stage (shard i searches with its own seed)
    executor: Literal["local", "ray"] = "local"  # the stage's process, or the `ray` cluster
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least(self, 0, "problems", "samples", "mcts_rollouts", "mcts_runs", "vote_top")
        _at_least(self, 1, "mcts_children", "shard_size")
        _at_least(self, 0, "temperature")
        _choices(self)
        if self.engine:
            engine_config({"engine": self.engine}, where="evaluate.engine")

    def engine_group(self, params: dict[str, Any]) -> EngineConfig:
        """The engine evaluation runs: its own `evaluate.engine`, else the `engine` group."""
        if self.engine:
            return engine_config({"engine": self.engine}, where="evaluate.engine")
        return engine_config(params)

    @property
    def uses_ppm(self) -> bool:
        """Whether any method asks the PPM: best-of-N ranks the samples, MCTS is guided by it."""
        return self.samples > 0 or self.mcts_rollouts > 0


# --------------------------------------------------------------------------- reading params


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run `rstar profile default` to create it)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter groups")
    return params


def group(
    params: dict[str, Any], name: str, cls: type[T], *, where: str | None = None, **overrides: Any
) -> T:
    """Build ``cls`` from ``params[name]``; an unknown key or a value of the wrong type is an
    error that names it (``where`` is how the group is spelled in params.yaml, default name)."""
    where = where or name
    values = params.get(name) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"params group {where!r} must be a mapping, got {values!r}")
    values = {**values, **overrides}
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(
            f"params group {where!r}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _conforms(value, hints.get(key, Any)):
            raise ParamsError(
                f"{where}.{key} must be {_describe(hints[key])}, got {value!r}"
                + (" (YAML reads 1e-4 as text: write 1.0e-4)" if _float_as_text(value) else "")
            )
    try:
        return cls(**values)
    except OutOfRange as error:
        raise error.at(where) from None
    except ParamsError:
        raise
    except (TypeError, ValueError) as error:
        raise ParamsError(f"params group {where!r}: {error}") from None


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a dataclass field's annotation (the shapes params use)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple)) and all(
            _conforms(item, args[0]) for item in value if args and args[-1] is not Ellipsis
        )
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or hint) if isinstance(origin or hint, type) else True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
             type(None): "null", dict: "a mapping", list: "a list"}  # fmt: skip
    return names.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _float_as_text(value: Any) -> bool:
    """PyYAML reads exponent notation without a dot (1e-4) as a string: a common trap."""
    if not isinstance(value, str) or "e" not in value.lower():
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True
