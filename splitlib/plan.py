"""What each notebook of a profile needs, said before anything loads: ``splitreason plan --profile P``.

For every stage: the models it loads and on which engine (hf, vLLM, a server it expects, or training), their
sizes, the GPUs it asks for, an estimate of the device memory it holds at once, the servers it talks to and the
data or models it would download. ``check`` compares that with the hardware this process can see and names each
stage that cannot run here. Sizes come from the weight files' headers of local models (exact), else from the
parameter count written in a hub id ("…-Qwen-32B" → the paper's 32.8 B), else they are unknown.

Estimates, in bytes per parameter: inference 2 (bf16 weights) plus 20 % for activations and runtime; CPU engines
4 (float32); full fine-tuning with Adam 16 (bf16 weights and gradients, fp32 master weights and two moments),
activations not counted. vLLM also takes ``gpu_memory_utilization`` of each GPU for its KV cache, so a
stage's engines must share the GPUs' memory; these are lower bounds, meant to catch what cannot fit at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitlib.hardware import PAPER_MODEL_PARAMS

INFER_BYTES = {"cuda": 2 * 1.2, "cpu": 4 * 1.2}
TRAIN_BYTES_PER_PARAM = 16
_RUN_OUTPUTS = ("models/", "hub/", "02_sft/", "03_grpo/")  # inside the run directory (hub/: rehearsal stand-ins)
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class ModelUse:
    ref: str  # what the parameters name: a run-directory path, a local folder or a hub id
    role: str  # small, big, base, a checkpoint name
    engine: str  # hf, vllm, openai (a server elsewhere), served (a vllm serve the stage starts), train
    n_params: float | None  # None: unknown (a hub id without a size in its name)
    gpus: int = 1  # tensor-parallel GPUs of a vLLM engine (0 for a server elsewhere)
    devices: tuple[int, ...] = ()  # a started server's GPUs (its CUDA_VISIBLE_DEVICES), when the profile pins them


@dataclass
class StageNeeds:
    notebook: str
    device: str  # cuda, cpu, or "server" when everything runs elsewhere
    models: list[ModelUse] = field(default_factory=list)
    servers: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        """GPUs the stage needs: its in-process engines start on the first ones; a started server takes the GPUs
        its profile pins (else as many more as its tensor parallelism)."""
        if self.device != "cuda":
            return 0
        local = max((m.gpus for m in self.models if m.engine not in ("openai", "served")), default=0)
        served = [m for m in self.models if m.engine == "served"]
        pinned = max((max(m.devices) + 1 for m in served if m.devices), default=0)
        return max(local, pinned) + sum(m.gpus for m in served if not m.devices)

    @property
    def memory_bytes(self) -> float | None:
        """Device memory held at once (every engine of the stage stays loaded); None when a size is unknown."""
        total = 0.0
        for m in self.models:
            if m.engine == "openai":
                continue  # a server elsewhere
            if m.n_params is None:
                return None
            per = TRAIN_BYTES_PER_PARAM if m.engine == "train" else INFER_BYTES[self.device if self.device != "server"
                                                                                else "cuda"]
            total += m.n_params * per
        return total


def n_params(ref: str, run_dir: Path | None = None, base: str | None = None) -> float | None:
    """Parameter count of a model reference (see the module docstring); a run output counts as ``base``."""
    if ref.startswith(_RUN_OUTPUTS):
        local = run_dir / ref if run_dir else None
        if local is not None and local.is_dir():
            return _count_local(local)
        return n_params(base, run_dir) if base else None
    path = Path(ref).expanduser()
    if path.is_dir():
        return _count_local(path)
    match = re.search(r"(\d+(?:\.\d+)?)B\b", ref)
    if not match:
        return None
    key = f"{match.group(1)}B"
    return PAPER_MODEL_PARAMS.get(key, float(match.group(1)) * 1e9)


def _count_local(folder: Path) -> float | None:
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        with file.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, t in header.items():
            if name != "__metadata__":
                total += (t["data_offsets"][1] - t["data_offsets"][0]) // _DTYPE_BYTES.get(t["dtype"], 4)
    return float(total) if files else None


def _hub(ref: str | None) -> bool:
    return bool(ref) and not ref.startswith(_RUN_OUTPUTS) and not Path(ref).expanduser().exists() and "/" in ref


def _device(setting: str, cuda: bool) -> str:
    return "cuda" if setting == "cuda" or (setting == "auto" and cuda) else "cpu"


def stage_needs(params: dict[str, Any], run_dir: Path | None, cuda: bool) -> list[StageNeeds]:
    """``params``: notebook name → its validated parameter dataclass (``notebook_params.load_yaml``)."""
    out = []
    m00 = params.get("00_models")
    small_id = m00.small_model_id if m00 and m00.world != "toy" else "models/small"
    big_id = m00.big_model_id if m00 and m00.world != "toy" else "models/big"
    if m00:
        s = StageNeeds("00_models", "cpu")
        if m00.world == "rehearsal":
            s.notes.append("builds hub-format stand-ins of the paper's models and data sets in hub/ (seconds)")
        if m00.world != "toy":
            s.notes.append("checks that both models load (configs and tokenizers only)")
            s.downloads += [r for r in (small_id, big_id) if _hub(r)]
        else:
            s.notes.append("builds the toy world and trains both toy models here")
        out.append(s)
    if (a := params.get("01_annotate")) is not None:
        s = StageNeeds("01_annotate", "cpu" if a.annotator != "surprisal" else _device("auto", cuda))
        if a.annotator == "llm":
            from splitlib.annotate.llm import LLM_PRESETS

            preset = a.annotator_params.get("preset")
            url = a.annotator_params.get("base_url") or (LLM_PRESETS[preset]["base_url"] if preset else None)
            if "annotator" in a.serve:
                _served(s, a.serve["annotator"], a.serve["annotator"]["model"], "annotator", run_dir)
            else:
                s.servers.append(f"LLM annotator at {url} (an OpenAI-compatible chat API)")
        elif a.annotator == "surprisal":
            ref = a.small_model or small_id
            s.models.append(ModelUse(ref, "small", "hf", n_params(ref, run_dir)))
        if a.dataset == "openr1" and _hub(a.openr1.source):
            s.downloads.append(a.openr1.source)
        out.append(s)
    if (t := params.get("02_sft")) is not None:
        s = StageNeeds("02_sft", _device(t.device, cuda))
        ref = t.base_model or small_id
        s.models.append(ModelUse(ref, "base", "train", n_params(ref, run_dir)))
        s.downloads += [r for r in (ref, t.eval_source) if _hub(r)]
        out.append(s)
    if (g := params.get("03_grpo")) is not None:
        s = StageNeeds("03_grpo", _device(g.device, cuda))
        s.models.append(ModelUse("02_sft/model", "small", "train", n_params("02_sft/model", run_dir, small_id)))
        if "offload" in g.modes or g.rl4e_latency_weights:
            big = g.big_model or big_id
            if "big" in g.serve:
                _served(s, g.serve["big"], big, "big", run_dir)
            elif g.rollout.big_backend == "openai":
                s.servers.append(f"big model {big} at {g.rollout.big_backend_options.get('base_url')}")
                s.models.append(ModelUse(big, "big", "openai", n_params(big, run_dir), gpus=0))
            else:
                s.models.append(ModelUse(big, "big", g.rollout.big_backend, n_params(big, run_dir)))
        if g.dataset == "openr1" and _hub(g.openr1.source):
            s.downloads.append(g.openr1.source)
        out.append(s)
    for name in ("04_random_switch", "05_evaluate"):
        if (e := params.get(name)) is not None:
            out.append(_eval_needs(name, e, run_dir, cuda, small_id))
    if (f := params.get("06_figure5")) is not None and not _figures_from_paper(f.source, params, run_dir):
        s = StageNeeds("06_figure5", _engine_device(f.profile_kind, cuda))
        for role, ref in (("base", small_id), ("big", big_id)):
            s.models.append(_use(ref, role, f.profile_kind, f.backend_opts.get(role, {}), run_dir))
        s.notes.append("profiles both models and times 05's methods at batch 1")
        out.append(s)
    elif f is not None:
        note = "draws the paper's figures from its published numbers and the simulator (source: paper; no model)"
        out.append(StageNeeds("06_figure5", "cpu", notes=[note]))
    return out


def _figures_from_paper(source: str, params: dict[str, Any], run_dir: Path | None) -> bool:
    """Whether notebook 06 will draw the paper's figures only: ``source: paper``, or ``auto`` when 05 neither ran
    on this run nor is planned before it."""
    if source != "auto":
        return source == "paper"
    ran = run_dir is not None and (run_dir / "05_evaluate" / "metrics.json").is_file()
    return not ran and "05_evaluate" not in params


def _engine_device(kind: str, cuda: bool) -> str:
    return "server" if kind == "openai" else ("cuda" if cuda else "cpu")


def _use(ref: str, role: str, kind: str, opts: dict, run_dir: Path | None, base: str | None = None) -> ModelUse:
    gpus = 0 if kind == "openai" else int(opts.get("tensor_parallel_size", 1))
    return ModelUse(ref, role, kind, n_params(ref, run_dir, base), gpus=gpus)


def _eval_needs(name: str, e: Any, run_dir: Path | None, cuda: bool, small_id: str) -> StageNeeds:
    s = StageNeeds(name, _engine_device(e.kind if e.kind == e.big_kind else "vllm", cuda))
    refs = {"base": e.small_model, "big": e.big_model, **getattr(e, "checkpoints", {})}
    for key, ref in refs.items():
        kind = e.big_kind if key == "big" else e.kind
        use = _use(ref, key, kind, e.backend_opts.get(key, {}), run_dir, base=e.small_model)
        if key in e.serve:
            _served(s, e.serve[key], ref, key, run_dir)
            continue
        s.models.append(use)
        if kind == "openai":
            s.servers.append(f"{key} model {ref} at {e.backend_opts.get(key, {}).get('base_url')}")
        elif _hub(ref):
            s.downloads.append(ref)
    if e.benchmark != "toy" and _hub(e.benchmark_source):
        s.downloads.append(e.benchmark_source)
    s.notes.append("every model of the stage stays loaded until it ends")
    return s


def _served(s: StageNeeds, spec: dict, ref: str, role: str, run_dir: Path | None) -> None:
    """A ``vllm serve`` the stage starts (``serve`` parameters): a model on its own GPUs, and a server line."""
    args, env = spec.get("args", {}), spec.get("env", {})
    pinned = env.get("CUDA_VISIBLE_DEVICES")
    devices = tuple(int(d) for d in str(pinned).split(",") if d.strip().isdigit()) if pinned else ()
    tp = int(args.get("tensor_parallel_size", 1))
    s.models.append(ModelUse(ref, role, "served", n_params(ref, run_dir), gpus=tp, devices=devices))
    where = f"GPUs {pinned}, tensor-parallel {tp}" if pinned else f"tensor-parallel {tp}" if tp > 1 else "one device"
    port = spec.get("port", 8000)
    s.servers.append(f"starts vllm serve of {ref} on 127.0.0.1:{port or 'a free port'} ({where}); stops it at the end")
    if _hub(ref):
        s.downloads.append(ref)


@dataclass(frozen=True)
class Hardware:
    gpus: int
    gpu_memory_bytes: float  # per GPU
    ram_bytes: float

    @classmethod
    def visible(cls) -> Hardware:
        import os

        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        mem = min((torch.cuda.get_device_properties(i).total_memory for i in range(n)), default=0)
        return cls(n, float(mem), float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")))


def check(stages: list[StageNeeds], hw: Hardware) -> list[str]:
    """One message per stage that cannot run on ``hw`` (empty: every stage fits, as far as estimated)."""
    problems = []
    for s in stages:
        need = s.memory_bytes
        if s.device == "cuda":
            if hw.gpus < max(s.gpus, 1):
                problems.append(f"{s.notebook} needs {max(s.gpus, 1)} CUDA GPU(s); {hw.gpus} visible")
            elif need is not None and need > hw.gpus * hw.gpu_memory_bytes:
                problems.append(f"{s.notebook} needs ~{need / 2**30:.0f} GiB of GPU memory; the {hw.gpus} visible "
                                f"GPU(s) hold {hw.gpus * hw.gpu_memory_bytes / 2**30:.0f} GiB")
        elif s.device == "cpu" and need is not None and need > hw.ram_bytes:
            problems.append(f"{s.notebook} needs ~{need / 2**30:.0f} GiB of memory on the CPU; this machine has "
                            f"{hw.ram_bytes / 2**30:.0f} GiB (run it on a GPU machine)")
    return problems


def render(stages: list[StageNeeds], hw: Hardware) -> str:
    """The plan as plain text, one block per stage."""
    lines = [(f"visible hardware: {hw.gpus} CUDA GPU(s) of {hw.gpu_memory_bytes / 2**30:.0f} GiB, "
              f"{hw.ram_bytes / 2**30:.0f} GiB RAM")]
    for s in stages:
        mem = s.memory_bytes
        held = "no model" if not s.models else "unknown" if mem is None else f"~{_bytes(mem)}"
        lines.append(f"\n{s.notebook}  [{s.device}{f', {s.gpus} GPU(s)' if s.gpus else ''}; memory {held}]")
        for m in s.models:
            size = "size unknown" if m.n_params is None else f"{_count(m.n_params)} params"
            lines.append(f"  model {m.role}: {m.ref} ({m.engine}, {size})")
        lines += [f"  server: {x}" for x in s.servers] + [f"  downloads: {x}" for x in s.downloads]
        lines += [f"  note: {x}" for x in s.notes]
    return "\n".join(lines)


def _count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def _bytes(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"
