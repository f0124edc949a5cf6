"""Prompts per role. The small model sees the hint; the big model's view has tags and hint stripped.

Format (PAPER_FACTS §2, DeepSeek-R1): ``<bos><｜User｜>{problem}\\n{hint}\\n{instruction}<｜Assistant｜>\\n<think>\\n``,
produced by each tokenizer's own chat template (the toy tokenizer ships an equivalent one).
"""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedTokenizerBase

from splitlib import provenance, tags

Role = Literal["small", "big"]
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Version of the rendering below (user turn layout, chat template, the opened <think> block): bump it whenever
# ``user_content`` or ``build_prompt`` changes what a model reads, so that TEMPLATE_ID changes with it.
RENDER_VERSION = "prompts/1: question, hint (small role), instruction; chat template; <think> opened"
# What a record keys its prompt by: changes whenever the instruction, the hint or the rendering changes. (The chat
# template itself belongs to the tokenizer and is keyed by the model's hash.)
TEMPLATE_ID = provenance.value_hash({"instruction": INSTRUCTION, "hint": tags.HINT, "render": RENDER_VERSION})


def user_content(question: str, role: Role, instruction: str = INSTRUCTION, hint: str = tags.HINT) -> str:
    """The user turn: problem, the hint (small role only), the instruction."""
    if role == "small":
        return f"{question}\n{hint}\n{instruction}"
    if role == "big":
        return f"{question}\n{instruction}"
    raise ValueError(f"role={role!r}: expected 'small' or 'big'")


def build_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, role: Role, instruction: str = INSTRUCTION, hint: str = tags.HINT
) -> str:
    """Prompt text for ``role`` through the tokenizer's chat template, ending where the reasoning starts."""
    if not question.strip():
        raise ValueError("empty question: a prompt needs a problem statement")
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; give it one or use a chat model")
    messages = [{"role": "user", "content": user_content(question, role, instruction, hint)}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not text.endswith("<think>\n"):
        text += "<think>\n"  # R1 templates differ on whether they open the thinking block
    return text


def big_view(generated: str) -> str:
    """What the big model reads of the small model's generation: no tags, no hint."""
    return tags.strip_hint(tags.strip_tags(generated))
