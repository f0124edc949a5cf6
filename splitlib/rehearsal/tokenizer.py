"""A stand-in for the tokenizer of ``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` (and -32B, which shares it).

Byte-level BPE trained here on the stand-in corpus (Qwen2's pre-tokenizer: digits split one by one), with the
hub tokenizer's added tokens in the hub's order and with the hub's flags: ``<｜end▁of▁sentence｜>`` (EOS, also
the pad token) and ``<｜begin▁of▁sentence｜>`` (BOS) special; ``<｜User｜>``, ``<｜Assistant｜>``, ``<｜EOT｜>``,
``<think>``, ``</think>`` added but NOT special (the hub's ``tokenizer_config.json`` marks them ``special:
false``, so they survive ``skip_special_tokens=True``). ``add_bos_token`` is true and the post-processor writes
the BOS, as on the hub. The control tags ``<bigmodel>``/``</bigmodel>`` are absent: the project's SFT adds them
(``splitlib.training.tokens``), exactly as it must for the real model.

The chat template is the one the authors' training recipes set (PAPER_FACTS §10), written here for the roles the
project uses: BOS, the (last) system prompt, ``<｜User｜>`` + content, ``<｜Assistant｜>`` + content +
``<｜end▁of▁sentence｜>``; the generation prompt is ``<｜Assistant｜>`` with no ``<think>\\n`` (``build_prompt``
opens the thinking block itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from splitlib.toy.tokenizer import _SPLIT as QWEN2_SPLIT  # the Qwen2 pre-tokenizer pattern (digits one by one)

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
EOT = "<｜EOT｜>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# (content, special) in the hub's id order (151643 …151649); BPE ids come first, as the hub's Qwen2 vocabulary does
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (EOS, True), (USER, False), (ASSISTANT, False), (BOS, True), (EOT, False), (THINK_OPEN, False),
    (THINK_CLOSE, False))
MODEL_MAX_LENGTH = 16384  # the hub tokenizer_config's value

# The authors' recipe template (training/open-r1/recipes/DeepSeek-R1-Distill-Qwen-1.5B/*/config_demo.yaml), rewritten
# for system / user / assistant messages: it renders the same strings for them (tool turns are not used here).
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system_prompt='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system_prompt = message['content'] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- bos_token + ns.system_prompt -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '" + USER + "' + message['content'] -}}"
    "{%- elif message['role'] == 'assistant' and message['content'] is not none -%}"
    "{{- '" + ASSISTANT + "' + message['content'] + '" + EOS + "' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + ASSISTANT + "' -}}{%- endif -%}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with ``vocab_size`` entries (added tokens not counted) trained on ``corpus``, then the hub's
    added tokens and a post-processor that writes the BOS."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    add_tokens(tok, ADDED_TOKENS)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return tok


def add_tokens(tok: Tokenizer, tokens: Sequence[tuple[str, bool]]) -> None:
    """Append ``(content, special)`` tokens one by one, so that their ids follow the given order."""
    for content, special in tokens:
        token = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])


def save_tokenizer(tok: Tokenizer, directory: str | Path) -> list[Path]:
    """Write ``tok`` as the hub repository holds it: ``tokenizer.json``, a ``tokenizer_config.json`` with the hub's
    keys (``tokenizer_class: LlamaTokenizerFast``, ``add_bos_token``, ``added_tokens_decoder``, the chat template
    inline) and ``special_tokens_map.json``. Returns the files written.

    The hub's ``LlamaTokenizerFast`` class is kept on purpose: transformers 5 loads a folder whose ``config.json``
    says ``qwen2`` through ``Qwen2Tokenizer`` (its list of hub configs with a wrong tokenizer class), exactly as it
    loads the real model; the stand-in goes through the same code path.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    added = {str(t_id): _added_entry(t) for t_id, t in sorted(tok.get_added_tokens_decoder().items())}
    config = {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added, "bos_token": BOS,
        "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False, "eos_token": EOS, "legacy": True,
        "model_max_length": MODEL_MAX_LENGTH, "pad_token": EOS, "sp_model_kwargs": {}, "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
    }
    special = {name: _added_entry(AddedToken(content, special=True, normalized=False), with_special=False)
               for name, content in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", EOS))}
    files = [d / "tokenizer.json", d / "tokenizer_config.json", d / "special_tokens_map.json"]
    files[1].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files[2].write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return files


def _added_entry(token: AddedToken, with_special: bool = True) -> dict:
    entry = {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
             "rstrip": token.rstrip, "single_word": token.single_word}
    if with_special:
        entry["special"] = token.special
    return entry
