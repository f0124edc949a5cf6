"""Where each stand-in lives under the hub root, and how big the stand-ins are.

The relative paths mirror the hub ids they stand in for (``models/<name>`` for ``deepseek-ai/<name>``,
``datasets/<name>`` for ``<org>/<name>``), so a profile names ``hub/models/DeepSeek-R1-Distill-Qwen-1.5B`` where the
paper profile names ``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# role -> (path under the hub root, the hub id or API model it stands in for)
STANDINS: dict[str, tuple[str, str]] = {
    "small": ("models/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    "big": ("models/DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
    "annotator": ("models/deepseek-chat", "deepseek-chat (DeepSeek's OpenAI-compatible API)"),
    "openr1": ("datasets/OpenR1-Math-220k", "open-r1/OpenR1-Math-220k"),
    "aime24": ("datasets/aime24_nofigures", "simplescaling/aime24_nofigures"),
    "math500": ("datasets/MATH-500", "HuggingFaceH4/MATH-500"),
    "sft": ("datasets/OpenR1_Math_SpeculativeReasoning", "akhauriyash/OpenR1_Math_SpeculativeReasoning"),
    "grpo": ("datasets/OpenR1_Math_SpecR_GRPO", "akhauriyash/OpenR1_Math_SpecR_GRPO"),
}
SMALL_MODEL, BIG_MODEL, ANNOTATOR_MODEL = (STANDINS[r][0] for r in ("small", "big", "annotator"))
OPENR1, AIME24, MATH500, SFT_DATA, GRPO_DATA = (STANDINS[r][0] for r in ("openr1", "aime24", "math500", "sft", "grpo"))
ANNOTATOR_SERVED_NAME = "deepseek-chat"  # the name to serve the annotator under (vLLM: --served-model-name)
# How the SFT set's assistant turns write the tags (``splitlib.rehearsal.datasets``: "padded" or "as_released").
SftTags = Literal["padded", "as_released"]


def standin_paths(root: str | Path) -> dict[str, Path]:
    """Each stand-in's directory under ``root`` (the hub root, e.g. ``outputs/<run>/hub``), by role."""
    base = Path(root)
    return {role: base / rel for role, (rel, _) in STANDINS.items()}


@dataclass(frozen=True)
class StandinSizes:
    """How big the stand-ins are: the models' shapes and the data sets' row counts."""

    vocab_size: int = 768  # BPE entries trained before the hub's added tokens (fewer when the corpus runs out)
    vocab_pad_to: int = 128  # the models' embedding rows are padded to a multiple of this, as the hub's are
    hidden_size: int = 64
    num_attention_heads: int = 2  # head_dim 32: vLLM's CPU attention supports head_dim 32, 64, 80, … only
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    small_layers: int = 1
    big_layers: int = 2
    max_position_embeddings: int = 32768  # room for max_model_len 20480
    init_std: float = 0.3  # non-norm weights ~ N(0, std²): greedy output varies instead of repeating one token
    openr1_rows: int = 48
    aime24_rows: int = 30
    math500_rows: int = 40
    sft_rows: int = 48
    grpo_rows: int = 48

    def __post_init__(self) -> None:
        positive = {k: v for k, v in self.__dict__.items() if k != "init_std"}
        bad = {k: v for k, v in positive.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"StandinSizes: {bad} must be positive integers")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"hidden_size={self.hidden_size}, num_attention_heads={self.num_attention_heads}, "
                             f"num_key_value_heads={self.num_key_value_heads}: heads must divide hidden_size and "
                             "key-value heads must divide heads")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size}: expected >= 300 (256 bytes + merges)")
        if self.hidden_size < 8:
            raise ValueError(f"hidden_size={self.hidden_size}: the annotator stand-in needs >= 8 directions")
        if not self.init_std > 0:
            raise ValueError(f"init_std={self.init_std}: expected > 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
