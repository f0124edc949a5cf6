"""What every notebook shares (run name, seed, ...) and 00_models: the toy world and its models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from splitlib.params import check

Profile = Literal["smoke", "toy", "paper", "rehearsal"]
# profiles whose parameter files size vLLM engines for GPUs (the rehearsal runs the paper's files on CPU)
GPU_SIZED_PROFILES = ("paper", "rehearsal")
# head sizes vLLM's CPU attention backend implements (vllm CPUAttentionBackend.get_supported_head_sizes)
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


@dataclass(frozen=True)
class ModelSpec:
    """Size of a toy Qwen2 model and its pretraining budget."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    pretrain_steps: int
    lr: float
    batch_size: int
    sliding_window: int | None  # attention window in tokens; null = full attention (the small toy model has one)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "batch_size"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "a positive integer")
        check(self.hidden_size % self.num_attention_heads == 0, "hidden_size", self.hidden_size,
              f"a multiple of num_attention_heads={self.num_attention_heads}")
        head_dim = self.hidden_size // self.num_attention_heads
        check(head_dim in VLLM_CPU_HEAD_SIZES, "num_attention_heads", self.num_attention_heads,
              f"a head count giving hidden_size/heads in {VLLM_CPU_HEAD_SIZES} (vLLM's CPU attention kernels); "
              f"got head_dim={head_dim}")
        check(self.pretrain_steps >= 0, "pretrain_steps", self.pretrain_steps, "an integer >= 0")
        check(0 < self.lr < 1, "lr", self.lr, "a learning rate in (0, 1)")
        check(self.sliding_window is None or self.sliding_window >= 8, "sliding_window", self.sliding_window,
              "null (full attention) or a window of at least 8 tokens")


@dataclass(frozen=True)
class Common:
    profile: Profile  # which parameter set this is (smoke: CI, toy: laptop default, paper: GPU cluster, rehearsal: paper on CPU)
    run_name: str  # outputs go to <outputs_root>/<run_name>/ (the notebooks' own default, "lab", is a scratch run)
    outputs_root: str  # usually "outputs" (a relative root is taken from the repository)
    seed: int  # every random choice derives from it
    progress: bool  # show progress bars (JupyterLab: widgets; papermill: a few log lines)
    overwrite: bool  # True: write into a run directory made with other parameters (splitlib.runrecord; --force)

    def __post_init__(self) -> None:
        check(bool(self.run_name) and "/" not in self.run_name and "\\" not in self.run_name
              and self.run_name.strip(".") != "", "run_name", self.run_name,
              "a folder name inside outputs_root: non-empty, without '/' or '\\', not '.' or '..'")


@dataclass(frozen=True)
class ModelsParams(Common):
    """00_models."""

    NOTEBOOK: ClassVar[str] = "00_models"

    world: Literal["toy", "paper", "rehearsal"]  # toy: build data + models here; paper: record hub ids and check they load; rehearsal: build hub-format stand-ins of the paper's models and data sets in hub/, then as paper
    n_train: int  # training problems written to data/train.jsonl (annotation, SFT, GRPO)
    n_test: int  # held-out problems written to data/test.jsonl (evaluation)
    n_steps: int  # toy: reasoning steps per trace
    coded_steps: list[int]  # toy: 0-based steps after which the value becomes the next bonus digit (hard steps)
    vocab_size: int  # toy: BPE vocabulary size before the control tokens
    small: ModelSpec  # toy small model (1 layer, sliding window: cannot see the bonus list from the trace)
    big: ModelSpec  # toy big model
    pretrain_threads: int  # toy: CPU threads while pretraining (0: the process's setting); timing runs as set
    eval_problems: int  # held-out problems used for the accuracy measurements here
    eval_batch_size: int  # batch size for greedy generation during evaluation
    speed_tokens: int  # tokens decoded (batch 1, KV cache) to measure each model's decode speed
    speed_rounds: int  # timing rounds, the models alternating; each model's speed is its median
    small_model_id: str  # paper: hub id or local dir of the small model
    big_model_id: str  # paper: hub id or local dir of the big model

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_train >= 1, "n_train", self.n_train, "an integer >= 1")
        check(self.n_test >= 1, "n_test", self.n_test, "an integer >= 1")
        check(1 <= self.eval_problems <= self.n_test, "eval_problems", self.eval_problems, f"1..n_test={self.n_test}")
        check(2 <= self.n_steps <= 26, "n_steps", self.n_steps, "2..26 (steps are labelled A..Z)")
        check(all(0 <= s < self.n_steps for s in self.coded_steps), "coded_steps", self.coded_steps,
              f"step indices in 0..n_steps-1={self.n_steps - 1}")
        check(self.vocab_size >= 300, "vocab_size", self.vocab_size, "an integer >= 300 (256 bytes + specials + merges)")
        n_questions = 9 ** len(self.coded_steps)
        check(self.world != "toy" or 2 * (self.n_train + self.n_test) <= n_questions, "coded_steps", self.coded_steps,
              f"enough coded steps for {self.n_train} + {self.n_test} distinct problems (9**len(coded_steps) = "
              f"{n_questions} must be >= 2 * (n_train + n_test))")
        check(self.speed_tokens >= 8, "speed_tokens", self.speed_tokens, "an integer >= 8")
        check(self.pretrain_threads >= 0, "pretrain_threads", self.pretrain_threads,
              "0 (the process's setting) or a number of threads")
        check(self.speed_rounds >= 1, "speed_rounds", self.speed_rounds, "an integer >= 1")


def check_optional_positive(owner: object, *names: str) -> None:
    """Each of ``names`` on ``owner`` is null (the preset's value) or a number > 0."""
    for name in names:
        value = getattr(owner, name)
        check(value is None or value > 0, name, value, "null (the default) or a number > 0")


def check_decode_fields(key: str, decode: Mapping[str, Any]) -> None:
    """``decode`` must build a ``DecodeConfig`` (known fields, possible values), checked before any work."""
    from splitlib.decoding.config import DecodeConfig
    from splitlib.params import build_config

    try:
        build_config(DecodeConfig, decode, "DecodeConfig", error=ValueError)
    except (TypeError, ValueError) as err:
        check(False, key, dict(decode), f"DecodeConfig settings ({err})")


def check_backend_opts(key: str, opts: Mapping[str, Any], kind_of: Mapping[str, str], default_kind: str) -> None:
    """``opts`` maps a model key to its loader options: each a mapping whose names that model's backend takes
    (``kind_of[model key]``, else ``default_kind``)."""
    from splitlib.backends import check_backend_options

    for model, options in opts.items():
        check(isinstance(options, Mapping), f"{key}.{model}", options, "a mapping of loader options")
        kind = kind_of.get(model, default_kind)
        try:
            check_backend_options(kind, options)
        except TypeError as err:
            check(False, f"{key}.{model}", dict(options), str(err))



# vLLM engines loaded together in one process may claim at most this share of a GPU between them (the rest:
# CUDA contexts and the allocator's slack, which vLLM's gpu_memory_utilization does not count)
GPU_SHARE_LIMIT = 0.95
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92  # what an engine claims when the option is not given


def check_gpu_memory(key: str, opts: Mapping[str, Any], profile: str, small_kind: str, big_kind: str,
                     small_keys: list[str], held_smalls: int = 1) -> None:
    """On the GPU-sized profiles (``paper``, and ``rehearsal`` that follows it), the vLLM engines a stage may hold together must fit on one GPU together.

    The rule: every vLLM engine of a process starts on the first visible GPU(s) (a tensor-parallel one spans GPUs
    0..tp-1), so a small model's engine and the big model's always share GPU 0, and ``gpu_memory_utilization`` is
    the share of each of its GPUs an engine claims. The decoder service holds one method's models at a time
    (``max_loaded=2``): one small engine beside the big one (``held_smalls=1``; notebook 06 profiles the base model
    while it times a checkpoint: 2). So, when both roles are vLLM: the ``held_smalls`` largest small shares plus
    the big model's share <= ``GPU_SHARE_LIMIT``. Each vLLM engine of the paper profile also
    sets ``gpu_memory_utilization`` and ``max_model_len`` explicitly (vLLM's defaults, 0.92 and the model's
    full context, would let the first engine take the GPU). CPU profiles are not checked: there vLLM sizes its
    KV cache by ``VLLM_CPU_KVCACHE_SPACE`` and ignores the utilization."""
    if profile not in GPU_SIZED_PROFILES:
        return
    engines = {k: small_kind for k in small_keys} | {"big": big_kind}
    for model, kind in engines.items():
        options = opts.get(model, {})
        if kind == "vllm":
            missing = [o for o in ("gpu_memory_utilization", "max_model_len") if o not in options]
            check(not missing, f"{key}.{model}", dict(options),
                  f"explicit {missing} for a vLLM engine on the paper profile (sized so that the engines held "
                  "together fit on one GPU)")
            util = options["gpu_memory_utilization"]
            check(0 < util <= GPU_SHARE_LIMIT, f"{key}.{model}.gpu_memory_utilization", util,
                  f"a share of the GPU in (0, {GPU_SHARE_LIMIT}]")
    if small_kind != "vllm":
        return  # hf models are not sized by vLLM's budget
    if big_kind != "vllm":  # the big model runs elsewhere (a server) or on hf: up to two small engines share GPU 0
        held = sorted(small_keys, key=lambda m: -opts[m]["gpu_memory_utilization"])[:2]
        shares = {m: opts[m]["gpu_memory_utilization"] for m in held}
        check(sum(shares.values()) <= GPU_SHARE_LIMIT + 1e-9, f"{key}.{held[0]}.gpu_memory_utilization", shares,
              f"small shares that sum to at most {GPU_SHARE_LIMIT}: two small engines held together share GPU 0")
        return
    big = opts["big"]["gpu_memory_utilization"]
    held = sorted(small_keys, key=lambda m: -opts[m]["gpu_memory_utilization"])[:held_smalls]
    shares = {m: opts[m]["gpu_memory_utilization"] for m in held}
    check(sum(shares.values()) + big <= GPU_SHARE_LIMIT + 1e-9, f"{key}.{held[0]}.gpu_memory_utilization", shares,
          f"small shares that with the big model's {big} sum to at most {GPU_SHARE_LIMIT}: {held_smalls} small "
          f"engine(s) and the big one share GPU 0 and may claim at most {GPU_SHARE_LIMIT} of it together")


def check_serve(key: str, serve: Mapping[str, Any], allowed: Mapping[str, str]) -> None:
    """``serve`` maps a server name to the ``splitlib.serve.ServerSpec`` of a ``vllm serve`` the notebook starts
    and stops; ``allowed`` maps the names a notebook knows to what it serves. A spec may leave out ``model`` where
    the notebook fills it in (the big model is the notebook's ``big_model``)."""
    from splitlib.params import build
    from splitlib.serve import ServerSpec

    unknown = sorted(set(serve) - set(allowed))
    check(not unknown, key, dict(serve), f"server names from {dict(allowed)} (got {unknown})")
    for name, spec in serve.items():
        check(isinstance(spec, Mapping), f"{key}.{name}", spec, "a mapping of vllm serve settings (splitlib.serve)")
        build(ServerSpec, {"model": "<filled in by the notebook>", **spec}, prefix=f"{key}.{name}.")
