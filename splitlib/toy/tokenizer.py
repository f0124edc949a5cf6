"""A byte-level BPE tokenizer trained locally, with a DeepSeek-R1-style chat template.

Digits are split individually (as in Qwen2). ``<bigmodel>``/``</bigmodel>`` (and ``<think>``/``</think>``)
are NON-special added tokens: single ids that survive ``skip_special_tokens=True`` (vLLM's default), so a
text stop on them fires and they stay visible in returned text (ENV_NOTES).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from splitlib import tags

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
PAD = "<｜▁pad▁｜>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# Qwen2's pre-tokenizer pattern: words with one leading non-letter, single digits, punctuation runs, whitespace.
_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# DeepSeek-R1-Distill prompt format (PAPER_FACTS §2): <bos><｜User｜>{content}<｜Assistant｜>\n<think>\n
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>\n<think>\n{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``corpus`` and wrap it as a Hugging Face fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [BOS, EOS, USER, ASSISTANT, PAD]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Added after BPE training, as non-special tokens: single ids, kept by skip_special_tokens.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (*tags.TAGS, THINK_OPEN, THINK_CLOSE)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=PAD, chat_template=CHAT_TEMPLATE
    )
    fast.add_bos_token = False  # the chat template writes it
    return fast
