"""Prompts per stage and role, rendered in a named style. The small model sees the hint; the big model's view has
tags and hint stripped.

A ``PromptStyle`` holds every text and rule that decides what a model reads at one stage (``sft``, ``grpo``,
``eval``): the user turn per role, an optional system prompt, the chat template (the tokenizer's own, or one the
style carries, as the authors' recipes set one), what follows the generation prompt, and how an SFT trace becomes
the completion. ``STYLES[stage]`` registers them by name; notebooks choose one with their ``prompt_style``
parameter and every record keys on ``PromptStyle.id``.

- ``project``: the project's prompt (every stage): ``{problem}\\n{hint}\\n{instruction}`` in the user turn through
  the tokenizer's chat template, ``<think>\\n`` opened after it (PAPER_FACTS §2, with "Please reason step by step").
- ``authors``: what the authors' code renders (PAPER_FACTS §10, their evaluation service): SFT = [user: the raw
  problem, assistant: the annotated trace] through their recipe's template; GRPO = their recipe's system prompt and
  the problem, generation prompt ``<｜Assistant｜>`` (the model writes ``<think>`` itself); evaluation =
  ``{problem}\\n{hint}\\n\\n Put your final answer within \\boxed{}.`` then ``<｜Assistant｜>\\n<think>\\n``, the hint
  only where the small model's tags are acted on (their small-only and random-switch prompts have none).
- ``authors_lm_eval`` (evaluation only): the text the official runs fed the small model through lm-eval: its chat
  template, decoded and stripped of the special tokens, leaves a newline after the problem, and the launcher passed
  the terminating string as a raw ``r"\\n Put…"``, so the instruction starts with a literal backslash-n.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from splitlib import provenance, tags
from splitlib.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Role = Literal["small", "big"]
Stage = Literal["sft", "grpo", "eval"]
STAGES: tuple[Stage, ...] = ("sft", "grpo", "eval")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Version of the rendering code below (how a style's texts are put together): bump it whenever ``build_prompt`` or
# ``sft_texts`` change what a model reads for the same style, so that every style's id changes with it.
RENDER_VERSION = "prompts/1: question, hint (small role), instruction; chat template; <think> opened"

# -- the authors' texts (PAPER_FACTS §2, §10) ------------------------------------------------------------------
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
# The template both recipes set, for the turns used here: BOS, the (last) system prompt, <｜User｜> + content,
# <｜Assistant｜> + content + EOS; the generation prompt is <｜Assistant｜> alone (no <think>).
AUTHORS_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages if m['role'] == 'system' -%}{%- set ns.system = m['content'] -%}{%- endfor -%}"
    "{{- bos_token ~ ns.system -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{- '" + USER + "' ~ m['content'] -}}"
    "{%- elif m['role'] == 'assistant' and m['content'] is not none -%}"
    "{{- '" + ASSISTANT + "' ~ m['content'] ~ '" + EOS + "' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + ASSISTANT + "' -}}{%- endif -%}"
)
# The evaluation service's terminating string (its default; also the small-only and big-only modes' own).
AUTHORS_INSTRUCTION = "\n Put your final answer within \\boxed{}."
# The GRPO recipe's system prompt is its format request, then that same string and the hint.
_AUTHORS_GRPO_FORMAT = (
    "You are a helpful AI Assistant that provides well-reasoned and detailed responses. You first think about the "
    "reasoning process as an internal monologue and then provide the user with the answer. Respond in the following "
    "format: <think>\n...\n</think>\n<answer>\n...\n</answer>. {instruction}")

Completion = Literal["eos", "template"]


@dataclass(frozen=True)
class PromptStyle:
    """Everything that decides the text of one stage. The defaults are the project's rendering.

    ``user_*``/``system_*``: per role, with ``{problem}``, ``{hint}`` and ``{instruction}`` filled in (one pass:
    a problem that contains such a name stays as it is); system None = no system turn. ``chat_template`` None = the
    tokenizer's own. ``opening``: written after the generation prompt — always, or (``opening_always`` False) only
    when the template does not end with it already. ``completion`` (SFT): ``eos`` = trace + the tokenizer's EOS;
    ``template`` = the assistant turn as the chat template writes it. ``hint_only_when_offloading``: the small
    model decoding alone (no offload policy) reads the big role's prompt, without the hint.
    """

    name: str
    stage: Stage = "eval"
    instruction: str = INSTRUCTION
    hint: str = tags.HINT
    user_small: str = "{problem}\n{hint}\n{instruction}"
    user_big: str = "{problem}\n{instruction}"
    system_small: str | None = None
    system_big: str | None = None
    chat_template: str | None = None
    opening: str = "<think>\n"
    opening_always: bool = False
    completion: Completion = "eos"
    hint_only_when_offloading: bool = False
    description: str = ""

    @property
    def id(self) -> str:
        """Hash of the texts and the rendering rule. Rule fields at their defaults (the project's rendering, which
        ``RENDER_VERSION`` names) are left out, so the project's evaluation style keeps the id its rows carry."""
        parts: dict[str, Any] = {"instruction": self.instruction, "hint": self.hint, "render": RENDER_VERSION}
        rule = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in _NOT_RULE and getattr(self, f.name) != f.default}
        return provenance.value_hash({**parts, **({"rule": rule} if rule else {})})

    def describe(self) -> dict[str, str]:
        """What a record says about the prompt: stage, name and id."""
        return {"stage": self.stage, "name": self.name, "id": self.id}


_NOT_RULE = {"name", "description", "instruction", "hint"}


def _project(stage: Stage) -> PromptStyle:
    return PromptStyle("project", stage, description="the project's prompt: problem, hint, instruction; <think> opened")


_AUTHORS_TEMPLATE = {"chat_template": AUTHORS_CHAT_TEMPLATE, "opening_always": True}
_AUTHORS_EVAL = {**_AUTHORS_TEMPLATE, "instruction": AUTHORS_INSTRUCTION, "opening": "\n<think>\n",
                 "hint_only_when_offloading": True}
STYLES: dict[Stage, Registry[PromptStyle]] = {
    "sft": Registry("SFT prompt style", {
        "project": _project("sft"),
        "authors": PromptStyle("authors", "sft", instruction="", hint="", user_small="{problem}", user_big="{problem}",
                               opening="", completion="template", **_AUTHORS_TEMPLATE,
                               description="user: the raw problem; assistant: the trace + EOS (recipe template)"),
    }),
    "grpo": Registry("GRPO prompt style", {
        "project": _project("grpo"),
        "authors": PromptStyle("authors", "grpo", instruction=AUTHORS_INSTRUCTION, user_small="{problem}",
                               user_big="{problem}", system_small=_AUTHORS_GRPO_FORMAT + " {hint}",
                               system_big=_AUTHORS_GRPO_FORMAT, opening="", **_AUTHORS_TEMPLATE,
                               description="the recipe's system prompt, the problem; ends <｜Assistant｜>"),
    }),
    "eval": Registry("evaluation prompt style", {
        "project": _project("eval"),
        "authors": PromptStyle("authors", "eval", **_AUTHORS_EVAL,
                               description="the evaluation service: problem, hint, terminating string"),
        "authors_lm_eval": PromptStyle("authors_lm_eval", "eval", user_small="{problem}\n\n{hint}\n{instruction}",
                                       user_big="{problem}\n\n{instruction}",
                                       **{**_AUTHORS_EVAL, "instruction": "\\n Put your final answer within \\boxed{}."},
                                       description="what lm-eval fed the service in the official runs"),
    }),
}
DEFAULT_STYLE = STYLES["eval"]["project"]
# What evaluation rows keyed their prompt by before styles existed: the project's evaluation style's id.
TEMPLATE_ID = DEFAULT_STYLE.id


def style(stage: Stage, chosen: PromptStyle | str | None = None) -> PromptStyle:
    """The style of ``stage``: a registered name (None: ``project``), or a ``PromptStyle`` checked to be for it."""
    if stage not in STYLES:
        raise ValueError(f"stage={stage!r}: expected one of {', '.join(STYLES)}")
    if isinstance(chosen, PromptStyle):
        if chosen.stage != stage:
            raise ValueError(f"prompt style {chosen.name!r} is for stage {chosen.stage!r}, not {stage!r}")
        return chosen
    return STYLES[stage][chosen or "project"]


def style_names(*stages: Stage) -> list[str]:
    """The names registered for every one of ``stages``."""
    return [n for n in STYLES[stages[0]].names() if all(n in STYLES[s] for s in stages)]


# -- rendering ---------------------------------------------------------------------------------------------------
_FIELD_RE = re.compile(r"\{(problem|hint|instruction)\}")


def _fill(template: str, question: str, s: PromptStyle) -> str:
    values = {"problem": question, "hint": s.hint, "instruction": s.instruction}
    return _FIELD_RE.sub(lambda m: values[m.group(1)], template)


def _role(role: Role, s: PromptStyle, offloading: bool) -> Role:
    if role not in ("small", "big"):
        raise ValueError(f"role={role!r}: expected 'small' or 'big'")
    return "big" if role == "small" and not offloading and s.hint_only_when_offloading else role


def user_content(question: str, role: Role, chosen: PromptStyle | None = None, offloading: bool = True) -> str:
    """The user turn of ``role``: by default problem, the hint (small role only), the instruction."""
    s = chosen or DEFAULT_STYLE
    return _fill(s.user_small if _role(role, s, offloading) == "small" else s.user_big, question, s)


def messages(question: str, role: Role, chosen: PromptStyle | None = None, offloading: bool = True) -> list[dict]:
    """The chat turns of ``role``'s prompt: the style's system prompt, if any, and the user turn."""
    s = chosen or DEFAULT_STYLE
    system = s.system_small if _role(role, s, offloading) == "small" else s.system_big
    user = {"role": "user", "content": user_content(question, role, s, offloading)}
    return ([{"role": "system", "content": _fill(system, question, s)}] if system is not None else []) + [user]


def _apply(tokenizer: PreTrainedTokenizerBase, s: PromptStyle, turns: list[dict], generation: bool) -> str:
    if s.chat_template is None and tokenizer.chat_template is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template; give it one or use a chat model")
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation,
                                         chat_template=s.chat_template)


def build_prompt(tokenizer: PreTrainedTokenizerBase, question: str, role: Role, chosen: PromptStyle | None = None,
                 offloading: bool = True) -> str:
    """Prompt text for ``role`` in style ``chosen`` (None: the project's evaluation prompt), ending where the
    model starts writing. ``offloading``: the small model's tags are acted on (False: it decodes alone)."""
    if not question.strip():
        raise ValueError("empty question: a prompt needs a problem statement")
    s = chosen or DEFAULT_STYLE
    text = _apply(tokenizer, s, messages(question, role, s, offloading), generation=True)
    if s.opening_always or not text.endswith(s.opening):
        text += s.opening  # R1 templates differ on whether they open the thinking block
    return text


def sft_texts(tokenizer: PreTrainedTokenizerBase, question: str, trace: str, chosen: PromptStyle) -> tuple[str, str]:
    """One SFT example as ``(prompt, completion)`` text; prompt + completion is the whole training sequence."""
    prompt = build_prompt(tokenizer, question, "small", chosen)
    if chosen.completion == "eos":
        return prompt, trace + tokenizer.eos_token
    full = _apply(tokenizer, chosen, [*messages(question, "small", chosen), {"role": "assistant", "content": trace}],
                  generation=False)
    if not full.startswith(prompt):
        raise ValueError(f"prompt style {chosen.name!r}: the chat template's conversation does not start with its "
                         "generation prompt, so the example cannot be split into prompt and completion")
    return prompt, full[len(prompt):]


def check_decoder_style(settings: Mapping[str, Any], chosen: PromptStyle) -> None:
    """Raise unless a decoder whose ``settings`` these are renders ``chosen`` (a decoder that names no prompt
    renders the project's)."""
    used = settings.get("prompt", TEMPLATE_ID)
    if used != chosen.id:
        raise ValueError(f"prompt_style {chosen.name!r} (id {chosen.id}) but the decoder renders prompt {used}: "
                         "the decoder must be given the style (DecoderService(prompt_style=...))")


def big_view(generated: str) -> str:
    """What the big model reads of the small model's generation: no tags, no hint."""
    return tags.strip_hint(tags.strip_tags(generated))
