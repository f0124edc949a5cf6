"""splitlib.training: control tokens, SFT/GRPO datasets and configs, tag usage, the offload rollout's ids and mask,
TRL's loss mask built from them, and short real SFT/GRPO runs on tiny models (CPU, seconds each)."""

from __future__ import annotations

import dataclasses
import statistics
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from trl import GRPOTrainer

from splitlib import prompts, rewards, tags
from splitlib.backends import testing as tiny_engines
from splitlib.backends.testing import SteeredHFBackend
from splitlib.backends.vllm_engine import VLLMBackend
from splitlib.decoder_service import DecoderService, Route
from splitlib.registry import Registry, UnknownNameError
from splitlib.seeds import derive_seed
from splitlib.toy.models import ToyModelConfig, build_model
from splitlib.toy.tokenizer import BOS, EOS, PAD
from splitlib.trace import Segment, Trace
from splitlib.training import (
    completion_from_trace,
    ensure_control_tokens,
    grpo_config,
    grpo_dataset,
    run_grpo,
    run_sft,
    sft_config,
    sft_dataset,
    step_logs,
    tag_usage,
)
from splitlib.training.configs import device_flags, precision
from splitlib.training.grpo import rollout_problems
from splitlib.training.rollout import (
    OffloadRollout,
    RolloutProblem,
    awake,
    colocated_generation,
    generation_indices,
    offload_decoder,
    policy_logprobs,
    prompt_token_ids,
    sequential_reasons,
    step_stats,
)

TINY = ToyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def tagged(problem) -> str:
    return tags.apply_spans(problem.trace, list(problem.hard_spans))


def annotated_rows(problems, n: int) -> list[dict]:
    return [{"id": p.id, "question": p.question, "annotated": tagged(p)} for p in problems[:n]]


def state_snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after_dir) -> bool:
    after = AutoModelForCausalLM.from_pretrained(after_dir).state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


# -- control tokens ---------------------------------------------------------------------------------------------
def tokenizer_without_tags() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["A: 4+1=5, code 5>2", "bigmodel tags are not in here"] * 10, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def test_ensure_control_tokens_is_a_noop_for_the_toy_tokenizer(toy_tokenizer) -> None:
    model = build_model(TINY, toy_tokenizer, seed=0)
    rows, size = model.get_input_embeddings().num_embeddings, len(toy_tokenizer)
    assert ensure_control_tokens(toy_tokenizer, model) == []
    assert (len(toy_tokenizer), model.get_input_embeddings().num_embeddings) == (size, rows)


def test_ensure_control_tokens_adds_missing_tags_as_single_non_special_ids() -> None:
    tok = tokenizer_without_tags()
    model = build_model(TINY, tok, seed=0)
    assert len(tok(tags.OPEN, add_special_tokens=False)["input_ids"]) > 1
    assert ensure_control_tokens(tok, model) == list(tags.TAGS)
    assert model.get_input_embeddings().num_embeddings == len(tok)
    text = "x" + tags.OPEN + " code 5>2" + tags.CLOSE
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for tag in tags.TAGS:
        assert ids.count(tok.convert_tokens_to_ids(tag)) == 1
        assert tag not in tok.all_special_tokens
    assert tok.decode(ids, skip_special_tokens=True) == text  # survives the detokenization vLLM does
    assert ensure_control_tokens(tok, model) == []  # second call: nothing left to add


def test_ensure_control_tokens_rejects_tags_registered_as_special() -> None:
    tok = tokenizer_without_tags()
    tok.add_special_tokens({"additional_special_tokens": [tags.OPEN, tags.CLOSE]})
    with pytest.raises(ValueError, match="special tokens"):
        ensure_control_tokens(tok)


# -- SFT data, configs, tag usage -------------------------------------------------------------------------------
def test_sft_dataset_prompt_has_the_hint_and_completion_ends_with_eos(toy_problems, toy_tokenizer) -> None:
    ds = sft_dataset(annotated_rows(toy_problems, 3), toy_tokenizer)
    assert ds.column_names == ["prompt", "completion"]
    row, problem = ds[0], toy_problems[0]
    assert row["prompt"] == prompts.build_prompt(toy_tokenizer, problem.question, "small")
    assert tags.HINT in row["prompt"] and row["prompt"].endswith("<think>\n")
    assert row["completion"] == tagged(problem) + toy_tokenizer.eos_token
    ids = toy_tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    n_spans = len(problem.hard_spans)
    assert ids.count(toy_tokenizer.convert_tokens_to_ids(tags.OPEN)) == n_spans
    assert ids.count(toy_tokenizer.convert_tokens_to_ids(tags.CLOSE)) == n_spans
    assert ids[-1] == toy_tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("bad_row", "error"),
    [
        ({"id": "x", "question": "q", "annotated": "a" + tags.OPEN + "b"}, "malformed tags"),
        ({"id": "x", "question": "q"}, "expected 'question' and 'annotated'"),
    ],
)
def test_sft_dataset_rejects_bad_rows(toy_tokenizer, bad_row, error) -> None:
    with pytest.raises((ValueError, KeyError), match=error):
        sft_dataset([bad_row], toy_tokenizer)


def test_tag_usage_counts_figure8_statistics() -> None:
    gens = [
        "aaaa" + tags.OPEN + "bbbb" + tags.CLOSE,  # 50 % offloaded, one span
        "no tags at all",
        tags.OPEN + "cc" + tags.CLOSE + "dd" + tags.OPEN + "ee" + tags.CLOSE + "ff",  # 50 %, two spans
        "unclosed " + tags.OPEN + "tail",
    ]
    usage = tag_usage(gens)
    assert usage["n"] == 4
    assert usage["balanced_fraction"] == 0.75
    assert usage["no_tags_fraction"] == 0.25
    assert usage["offload_char_fraction_mean"] == pytest.approx((0.5 + 0 + 0.5 + 0) / 4)
    assert usage["offload_char_fraction_median"] == pytest.approx(0.25)
    assert usage["tags_per_sample_mean"] == statistics.fmean([1, 0, 2, 1])


def test_sft_paper_preset_matches_the_paper_and_stays_cpu_safe() -> None:
    cfg = sft_config("paper", device="cpu", output_dir="unused")
    assert (cfg.num_train_epochs, cfg.learning_rate, cfg.lr_scheduler_type) == (3, 5e-5, "cosine_with_min_lr")
    assert cfg.lr_scheduler_kwargs == {"min_lr_rate": 0.1} and cfg.warmup_steps == 0.05
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps == 64
    assert cfg.packing and cfg.max_length == 16384 and not cfg.completion_only_loss
    assert (cfg.use_cpu, cfg.bf16, cfg.gradient_checkpointing, cfg.report_to) == (True, False, False, [])


def fake_cuda(monkeypatch, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)


def test_precision_on_cpu_is_float32_without_autocast() -> None:
    p = precision("cpu")
    assert (p.load_dtype, p.trl_flags, p.accelerate) == (
        torch.float32, {"use_cpu": True, "bf16": False, "fp16": False}, "no")
    assert device_flags("cpu") == {**p.trl_flags, "gradient_checkpointing": False, "report_to": "none"}


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_precision_on_a_bf16_gpu_is_float32_weights_with_bf16_autocast(monkeypatch, device) -> None:
    fake_cuda(monkeypatch, bf16=True)
    p = precision(device)
    assert (p.load_dtype, p.trl_flags, p.accelerate) == (
        torch.float32, {"use_cpu": False, "bf16": True, "fp16": False}, "bf16")
    assert device_flags(device) == {**p.trl_flags, "report_to": "none"}  # gradient checkpointing: the preset's


def test_precision_on_a_gpu_without_bf16_is_float32_with_a_warning(monkeypatch, caplog) -> None:
    fake_cuda(monkeypatch, bf16=False)
    p = precision("auto")
    assert (p.load_dtype, p.trl_flags["bf16"], p.trl_flags["fp16"], p.accelerate) == (torch.float32, False, False, "no")
    assert "no bf16" in caplog.text


def test_precision_device_cpu_ignores_a_visible_gpu(monkeypatch) -> None:
    fake_cuda(monkeypatch, bf16=True)
    assert precision("cpu").trl_flags["use_cpu"] is True


def test_config_builders_reject_unknown_keys_and_bad_batches() -> None:
    with pytest.raises(ValueError, match="valid keys"):
        sft_config("smoke", device="cpu", not_a_field=1)
    with pytest.raises(ValueError, match="global_batch_size=10"):
        sft_config("smoke", device="cpu", global_batch_size=10, per_device_train_batch_size=4)
    with pytest.raises(UnknownNameError, match="unknown GRPO preset 'big'; allowed: paper, toy, smoke"):
        grpo_config("big")
    with pytest.raises(UnknownNameError, match="unknown SFT preset 'big'; allowed: paper, toy, smoke"):
        sft_config("big")
    with pytest.raises(UnknownNameError, match="unknown GRPO mode 'rl'; allowed: paper, offload"):
        run_grpo("unused", None, [], "unused", mode="rl")


def test_grpo_paper_preset_matches_the_paper() -> None:
    cfg = grpo_config("paper", device="cpu", output_dir="unused")
    assert (cfg.learning_rate, cfg.lr_scheduler_kwargs, cfg.warmup_steps) == (1e-6, {"min_lr_rate": 0.1}, 0.1)
    assert (cfg.temperature, cfg.top_k, cfg.max_completion_length) == (0.7, 50, 2048)
    assert (cfg.beta, cfg.epsilon, cfg.num_generations) == (0.04, 0.2, 14)
    assert not cfg.use_vllm  # vLLM only on a GPU unless asked for


def test_grpo_dataset_has_plain_text_prompts_and_solutions(toy_problems, toy_tokenizer) -> None:
    ds = grpo_dataset(toy_problems[:2], toy_tokenizer)
    assert ds.column_names == ["prompt", "solution", "gold_rule"]
    assert ds[1] == {
        "prompt": prompts.build_prompt(toy_tokenizer, toy_problems[1].question, "small"),
        "solution": toy_problems[1].answer,
        "gold_rule": "answer",  # the rewards read the gold text by this rule
    }


def test_grpo_dataset_reads_the_worked_solution_when_gold_is_solution(toy_tokenizer) -> None:
    rows = [{"question": "What is 2+2?", "answer": "4", "solution": "2+2 gives \\boxed{4}."}]
    (row,) = grpo_dataset(rows, toy_tokenizer, gold="solution")
    assert (row["solution"], row["gold_rule"]) == ("2+2 gives \\boxed{4}.", "solution")
    with pytest.raises(ValueError, match="gold rule 'solution' reads column 'solution'"):
        grpo_dataset([{"question": "q", "answer": "4"}], toy_tokenizer, gold="solution")


# -- the offload rollout: ids and env_mask from a trace -----------------------------------------------------------
def segment(model: str, ids: list[int], text: str, finish: str) -> Segment:
    return Segment(
        model=model,
        token_ids=tuple(ids),
        text=text,
        prefill_tokens=0,
        decode_tokens=len(ids),
        discarded_tokens=0,
        check_tokens=0,
        wall_s=0.0,
        finish=finish,
    )


def hand_trace(tok, big_text: str = " code 0>6", big_finish: str = "takeback", big_tok=None) -> Trace:
    """small "… 7+3=0,<bigmodel>" | big " code 0>6" | small "</bigmodel>\\nD: …\\boxed{6}" then EOS."""
    big_tok = big_tok or tok
    parts = [
        ("small", "A: 4+1=5\nB: 5+2=7\nC: 7+3=0," + tags.OPEN, "handoff"),
        ("big", big_text, big_finish),
        ("small", tags.CLOSE + "\nD: 6+4=0\nAnswer: \\boxed{0}", "eos"),
    ]
    segs = tuple(
        segment(m, (big_tok if m == "big" else tok)(t, add_special_tokens=False)["input_ids"], t, f)
        for m, t, f in parts
    )
    return Trace(
        segments=segs,
        text="".join(t for _, t, _ in parts),
        prompt_tokens={"small": 10, "big": 9},
        handoffs=1,
        rejected_requests=0,
        finish="eos",
        wall_s=0.0,
    )


def test_completion_from_trace_masks_big_tokens_and_keeps_control_tokens(toy_tokenizer) -> None:
    tok = toy_tokenizer
    trace = hand_trace(tok)
    close_id, open_id = (tok.convert_tokens_to_ids(t) for t in (tags.CLOSE, tags.OPEN))
    done = completion_from_trace(trace, tok, same_tokenizer=True, close_id=close_id)
    small1, big, small2 = (list(s.token_ids) for s in trace.segments)
    assert list(done.ids) == small1 + big + small2 + [tok.eos_token_id]
    assert list(done.env_mask) == [1] * len(small1) + [0] * len(big) + [1] * len(small2) + [1]
    assert done.ids[len(small1) - 1] == open_id and done.env_mask[len(small1) - 1] == 1
    assert done.ids[len(small1) + len(big)] == close_id and done.env_mask[len(small1) + len(big)] == 1
    assert tok.decode(done.ids, skip_special_tokens=True) == trace.text


def test_completion_from_trace_retokenizes_a_different_big_tokenizer(toy_tokenizer) -> None:
    other = tokenizer_without_tags()  # a big model with another vocabulary: its ids mean nothing to the small one
    trace = hand_trace(toy_tokenizer, big_tok=other)
    close_id = toy_tokenizer.convert_tokens_to_ids(tags.CLOSE)
    done = completion_from_trace(trace, toy_tokenizer, same_tokenizer=False, close_id=close_id)
    big_in_small = toy_tokenizer(" code 0>6", add_special_tokens=False)["input_ids"]
    n_small1 = len(trace.segments[0].token_ids)
    assert list(done.ids[n_small1 : n_small1 + len(big_in_small)]) == big_in_small
    assert done.env_mask.count(0) == len(big_in_small)
    assert toy_tokenizer.decode(done.ids, skip_special_tokens=True) == trace.text


def test_completion_from_trace_masks_a_closer_forced_by_the_offload_cap(toy_tokenizer) -> None:
    trace = hand_trace(toy_tokenizer, big_finish="offload_cap")
    close_id = toy_tokenizer.convert_tokens_to_ids(tags.CLOSE)
    done = completion_from_trace(trace, toy_tokenizer, same_tokenizer=True, close_id=close_id)
    at = done.ids.index(close_id)
    assert done.env_mask[at] == 0 and done.env_mask[at + 1] == 1


def test_completion_from_trace_closes_a_span_cut_short_by_eos_outside_the_loss(toy_tokenizer) -> None:
    tok = toy_tokenizer
    full = hand_trace(tok)
    segs = (full.segments[0], dataclasses.replace(full.segments[1], finish="eos"))
    trace = dataclasses.replace(full, segments=segs, text=segs[0].text + segs[1].text + tags.CLOSE)
    close_id = tok.convert_tokens_to_ids(tags.CLOSE)
    done = completion_from_trace(trace, tok, same_tokenizer=True, close_id=close_id)
    assert done.ids[-2:] == (close_id, tok.eos_token_id) and done.env_mask[-2:] == (0, 0)
    assert tok.decode(done.ids, skip_special_tokens=True) == trace.text


def test_rollout_seeds_are_stable_and_distinct_per_prompt_generation_and_step() -> None:
    assert generation_indices(["a", "a", "b", "b", "a"]) == [0, 1, 0, 1, 2]
    seeds = {derive_seed(0, s, 0, g, q) for s in (0, 1) for q in ("a", "b") for g in (0, 1)}
    assert len(seeds) == 8


def test_policy_logprobs_match_a_manual_softmax(tiny_models) -> None:
    model = tiny_models["small"]
    p, c = [1, 2, 3], [4, 5]
    (got,) = policy_logprobs(model, [p], [c], temperature=0.7)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0] / 0.7
    want = [torch.log_softmax(logits[i], -1)[t].item() for i, t in zip((2, 3), c, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)


def test_step_logs_join_rollout_stats_to_the_step_they_trained() -> None:
    history = [{"loss": 1.0, "step": 1}, {"loss": 0.5, "step": 2}, {"train_runtime": 3.0, "step": 2}]
    rows = step_logs(history, [{"step": 0, "accuracy": 0.5}, {"step": 1, "accuracy": 1.0}])
    assert [r["rollout/accuracy"] for r in rows] == [0.5, 1.0] and len(rows) == 2


# -- THE MASKING TEST: TRL's loss never sees the big model's tokens ------------------------------------------------
def by_position(completions: list, **kwargs) -> list[float]:
    """A reward that differs inside every group, so every advantage is non-zero."""
    return [float(i) for i in range(len(completions))]


BIG_TEXTS = (" code 0>6", " code 1>2, then 3")


DECODE_CALLS: list[dict] = []


def scripted_decode(route, questions, seeds, sampling, max_new_tokens, key_prefix="seed") -> list[Trace]:
    """The engine's place in the rollout, scripted: alternating big spans of different lengths."""
    DECODE_CALLS.append({"route": route, "seeds": seeds, "sampling": sampling, "max_new_tokens": max_new_tokens,
                         "key_prefix": key_prefix})
    tokenizer = route.small.tokenizer
    return [
        dataclasses.replace(
            hand_trace(tokenizer, big_text=BIG_TEXTS[i % 2]),
            prompt_tokens={"small": len(prompt_token_ids(tokenizer, q))},
        )
        for i, q in enumerate(questions)
    ]


REWARD_KWARGS: list[dict] = []


def records_kwargs(completions: list, **kwargs) -> list[float]:
    REWARD_KWARGS.append(kwargs)
    return [0.0] * len(completions)


def test_trl_loss_mask_and_gradient_leave_out_exactly_the_big_model_tokens(
    tiny_model_dirs, toy_problems, toy_tokenizer, tmp_path
) -> None:
    tok = toy_tokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["small"])
    dataset = grpo_dataset(toy_problems[:2], tok)
    route = Route("split", small=None, big="big")
    rollout = OffloadRollout(rollout_problems(toy_problems[:2], dataset), scripted_decode, route, same_tokenizer=True)
    args = grpo_config("smoke", device="cpu", output_dir=str(tmp_path), beta=0.04)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[by_position, records_kwargs],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        rollout_func=rollout,
    )
    trainer.model.train()
    REWARD_KWARGS.clear()
    DECODE_CALLS.clear()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))  # rollout + rewards, as a step does

    # the decoder got the live policy as the small model, the rollout seeds under their own key prefix, and TRL's
    # sampling settings (top_k recorded; the decoder warns that it does not apply it)
    (call,) = DECODE_CALLS
    assert call["route"].small.model is trainer.model and call["route"].big == "big"
    assert call["key_prefix"] == "rollout" and call["max_new_tokens"] == args.max_completion_length
    assert (call["sampling"].temperature, call["sampling"].top_p, call["sampling"].top_k) == (
        args.temperature, 1.0, args.top_k)
    questions = [p.question for p in toy_problems[:2] for _ in range(args.num_generations)]
    assert sorted(call["seeds"]) == sorted(derive_seed(0, 0, 0, g, q) for q, g in zip(
        questions, generation_indices(questions)))

    # 0. the rewards got each completion's trace and offload fraction
    (seen,) = REWARD_KWARGS
    assert len(seen["traces"]) == len(seen["offload_fraction"]) == 4
    assert Trace.from_json(seen["traces"][0]).offload_char_fraction == seen["offload_fraction"][0] > 0

    # 1. the loss mask TRL built from env_mask: 0 exactly on the big model's tokens, 1 on both control tokens
    close_id = tok.convert_tokens_to_ids(tags.CLOSE)
    expected = {}
    for i, text in enumerate(BIG_TEXTS):
        done = completion_from_trace(hand_trace(tok, big_text=text), tok, True, close_id)
        expected[done.ids] = done.env_mask
    loss_mask = inputs["completion_mask"] * inputs["tool_mask"]
    for ids, lengths, mask in zip(inputs["completion_ids"], inputs["completion_mask"].sum(1), loss_mask, strict=True):
        key = tuple(ids[:lengths].tolist())
        assert tuple(mask[:lengths].tolist()) == expected[key]
        assert mask[lengths:].sum() == 0
    assert all(
        m.count(0) == len(tok(t, add_special_tokens=False)["input_ids"])
        for m, t in zip(expected.values(), BIG_TEXTS, strict=True)
    )

    # 2. the gradient: d loss / d (final hidden state) is zero where the model predicts a big-model token and
    #    non-zero where it predicts one of its own (the final hidden state feeds only that position's log-prob)
    captured = {}

    def keep_hidden(module, args, output) -> None:
        output.last_hidden_state.retain_grad()
        captured["h"] = output.last_hidden_state

    hook = trainer.model.model.register_forward_hook(keep_hidden)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by the loss
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    hook.remove()
    grad_norm = captured["h"].grad.norm(dim=-1)  # (B, P + C)
    prompt_len = inputs["prompt_ids"].shape[1]
    predicting = grad_norm[:, prompt_len - 1 : -1]  # position P + k - 1 predicts completion token k
    assert torch.all(predicting[loss_mask == 0] == 0)
    assert torch.all(predicting[loss_mask == 1] > 0)
    assert torch.all(grad_norm[:, : prompt_len - 1] == 0)  # nor from the prompt


# -- real runs on tiny models -------------------------------------------------------------------------------------
SMOKE_TRL = {"preset": "smoke", "device": "cpu", "seed": 0}


def distinct_chars(completions: list, **kwargs) -> list[float]:
    """Varies between random samples, so a GRPO step on a random model has non-zero advantages."""
    return [len(set(c)) / max(len(c), 1) for c in completions]


@pytest.fixture
def with_distinct_chars(monkeypatch: pytest.MonkeyPatch) -> None:
    """``distinct_chars`` in a copy of the reward registry (TRL logs a reward under its function's __name__)."""
    monkeypatch.setattr(rewards, "REWARDS", Registry("reward", dict(rewards.REWARDS.items())))
    rewards.REWARDS.register("distinct_chars", distinct_chars)


def test_two_step_sft_changes_weights_and_writes_the_model(tiny_model_dirs, toy_problems, tmp_path) -> None:
    before = state_snapshot(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["small"]))
    metrics = run_sft(
        tiny_model_dirs["small"], annotated_rows(toy_problems, 4), tmp_path / "sft", params=SMOKE_TRL, progress=False
    )
    assert metrics["steps"] == 2 and len(metrics["loss_curve"]) == 2
    assert all(row["loss"] > 0 for row in metrics["loss_curve"])
    assert changed(before, tmp_path / "sft")
    assert AutoTokenizer.from_pretrained(tmp_path / "sft").convert_tokens_to_ids(tags.OPEN) is not None


def test_sft_from_bf16_weights_trains_a_float32_copy(tiny_model_dirs, toy_tokenizer, toy_problems, tmp_path) -> None:
    """Hub weights are bf16: the trainable model is loaded in float32 (the master copy), and saved so."""
    bf16_dir = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dirs["small"], dtype=torch.bfloat16).save_pretrained(bf16_dir)
    toy_tokenizer.save_pretrained(bf16_dir)
    assert AutoModelForCausalLM.from_pretrained(bf16_dir, dtype="auto").dtype == torch.bfloat16
    run_sft(bf16_dir, annotated_rows(toy_problems, 2), tmp_path / "sft", params={**SMOKE_TRL, "max_steps": 1},
            progress=False)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sft", dtype="auto").dtype == torch.float32


def test_two_step_grpo_paper_mode_changes_weights(tiny_model_dirs, toy_problems, tmp_path, with_distinct_chars) -> None:
    before = state_snapshot(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["small"]))
    metrics = run_grpo(
        tiny_model_dirs["small"],
        None,
        toy_problems[:4],
        tmp_path / "grpo",
        mode="paper",
        reward_names=["paper", "distinct_chars"],
        params=SMOKE_TRL,
        progress=False,
    )
    assert len(metrics["steps"]) == 2
    assert {"rewards/paper/mean", "rewards/distinct_chars/mean", "completions/mean_length", "loss"} <= set(
        metrics["steps"][0]
    )
    assert changed(before, tmp_path / "grpo")


def steer_offloads(tokenizer):
    """Small-model behaviour a random model lacks: ask for the big model 6 tokens after the last tag, hand back
    3 tokens into the span (the hint in the prompt ends with a closing tag: the first request comes at once)."""
    open_id, close_id = (tokenizer.convert_tokens_to_ids(t) for t in tags.TAGS)

    def steer(context):
        last = max((i for i, t in enumerate(context) if t in (open_id, close_id)), default=-1)
        since = len(context) - 1 - last
        if last >= 0 and context[last] == open_id:
            return close_id if since == 3 else None
        return open_id if since >= 6 else None

    return lambda model, tok: SteeredHFBackend(model, tok, steer=steer)


@pytest.mark.parametrize("prompt_style", ["project", "authors"])  # authors: the rollouts decode the system prompt
def test_two_step_grpo_offload_mode_changes_weights_and_logs_offloads(
    tiny_model_dirs, toy_problems, toy_tokenizer, tmp_path, with_distinct_chars, prompt_style
) -> None:
    before = state_snapshot(AutoModelForCausalLM.from_pretrained(tiny_model_dirs["small"]))
    params = {**SMOKE_TRL, "rollout": {"small_backend": steer_offloads(toy_tokenizer)}}
    metrics = run_grpo(
        tiny_model_dirs["small"],
        tiny_model_dirs["big"],
        toy_problems[:4],
        tmp_path / "grpo",
        mode="offload",
        reward_names=["paper", "rl4e", "distinct_chars"],
        params=params,
        progress=False,
        prompt_style=prompt_style,
    )
    assert metrics["prompt_style"]["name"] == prompt_style
    steps = metrics["steps"]
    assert len(steps) == 2
    assert {"rewards/rl4e/mean", "completions/mean_length", "rollout/accuracy"} <= set(steps[0])
    assert all(0 < row["rollout/offload_fraction_mean"] < 1 and row["rollout/handoffs_mean"] >= 1 for row in steps)
    assert changed(before, tmp_path / "grpo")


def test_offload_decoder_refuses_settings_that_the_grpo_config_owns(tiny_model_dirs) -> None:
    with pytest.raises(ValueError, match="temperature"):
        offload_decoder(tiny_model_dirs["big"], decode={"temperature": 1.0})


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["paper", "offload"])
def test_two_step_grpo_on_cuda(mode, tiny_model_dirs, toy_problems, toy_tokenizer, tmp_path, with_distinct_chars):
    """The GPU flags (bf16 where supported, no use_cpu) with both rollout modes; vLLM stays off in the smoke preset."""
    params = {**SMOKE_TRL, "device": "cuda"}
    if mode == "offload":
        params["rollout"] = {"small_backend": steer_offloads(toy_tokenizer)}
    metrics = run_grpo(
        tiny_model_dirs["small"],
        tiny_model_dirs["big"],
        toy_problems[:4],
        tmp_path / "grpo",
        mode=mode,
        reward_names=["paper", "distinct_chars"],
        params=params,
        progress=False,
    )
    assert len(metrics["steps"]) == 2


# -- the rollout on TRL's colocated vLLM engine ("policy_engine: vllm") ------------------------------------------
def test_step_stats_report_generated_tokens_and_throughput_over_the_measured_decode_wall(toy_tokenizer) -> None:
    traces = [hand_trace(toy_tokenizer), hand_trace(toy_tokenizer, big_text=BIG_TEXTS[1])]
    row = step_stats(3, traces, [RolloutProblem("q")] * 2, decode_wall_s=0.5)
    assert row["generated_tokens"] == sum(t.total_tokens for t in traces) > 0
    assert row["decode_wall_s"] == 0.5 and row["tok_per_s"] == row["generated_tokens"] / 0.5


@pytest.mark.parametrize(("policy_engine", "big_backend", "policy", "reasons"), [
    ("hf", "hf", "split", ["policy_engine='hf' does not batch", "big_backend='hf' does not batch"]),
    ("vllm", "hf", "split", ["big_backend='hf' does not batch"]),
    ("vllm", "vllm", "split", []),
    ("vllm", "openai", "split", []),
    ("vllm", "hf", "small_only", []),  # the big model is never called
])
def test_sequential_reasons_name_every_engine_that_does_not_batch(policy_engine, big_backend, policy, reasons) -> None:
    assert sequential_reasons(policy_engine, big_backend, policy) == reasons


def test_policy_engine_vllm_without_use_vllm_is_refused_before_anything_loads(tiny_model_dirs, toy_problems, tmp_path):
    params = {**SMOKE_TRL, "rollout": {"policy_engine": "vllm"}}  # CPU: grpo_config leaves use_vllm off
    with pytest.raises(ValueError, match=r"policy_engine='vllm'.*use_vllm=False.*set use_vllm=True, vllm_mode="):
        run_grpo(tiny_model_dirs["small"], tmp_path / "no-big-model-here", toy_problems[:4], tmp_path / "grpo",
                 mode="offload", params=params, progress=False)
    with pytest.raises(ValueError, match="vllm_mode='server'.*colocate"):
        run_grpo(tiny_model_dirs["small"], tmp_path / "no-big-model-here", toy_problems[:4], tmp_path / "grpo",
                 mode="offload", params={**params, "use_vllm": True, "vllm_mode": "server"}, progress=False)


def test_vllm_policy_engine_refuses_a_steered_backend_an_unknown_engine_and_a_trainer_without_vllm() -> None:
    route = Route("split", small=None, big="big")
    with pytest.raises(ValueError, match="small_backend replaces the hf policy engine"):
        OffloadRollout({}, scripted_decode, route, True, small_backend=SteeredHFBackend, policy_engine="vllm")
    with pytest.raises(UnknownNameError, match="hf, vllm"):
        OffloadRollout({}, scripted_decode, route, True, policy_engine="sglang")
    with pytest.raises(RuntimeError, match="no colocated vLLM engine.*use_vllm=True"):
        colocated_generation(SimpleNamespace(vllm_generation=None))


class SleepyGeneration:
    """TRL's VLLMGeneration under ``vllm_enable_sleep_mode`` as far as the rollout touches it (sleep mode needs a
    GPU): records the order of syncs, wake-ups and sleeps."""

    def __init__(self, weights_sleeping: bool) -> None:
        self.enable_sleep_mode = True
        self._llm_weights_sleeping = weights_sleeping
        self.calls: list[str] = []
        self.llm = SimpleNamespace(wake_up=lambda tags: self.calls.append(f"wake {tags}"),
                                   sleep=lambda level: self.calls.append(f"sleep {level}"))

    def sync_weights(self) -> None:
        self.calls.append("sync")
        self._llm_weights_sleeping = False


@pytest.mark.parametrize(("weights_sleeping", "first"), [(False, []), (True, ["sync"])])
def test_awake_wakes_a_sleeping_engine_as_trl_generate_does(weights_sleeping, first) -> None:
    """TRL synced the weights this step (False) or not (True: a second rollout in the same optimizer step)."""
    generation = SleepyGeneration(weights_sleeping)
    with awake(generation):
        generation.calls.append("decode")
    assert generation.calls == [*first, "wake ['kv_cache']", "decode", "sleep 2"]
    assert generation._llm_weights_sleeping  # the next rollout re-pushes the weights unless TRL does
    plain = SimpleNamespace(enable_sleep_mode=False)
    with awake(plain):
        pass


@pytest.fixture(scope="module")
def engine_dirs() -> dict:
    """The tiny models the suite's shared vLLM engines load (``splitlib.backends.testing``)."""
    return tiny_engines.tiny_model_dirs()


@pytest.fixture(scope="module")
def vllm_engines(engine_dirs) -> tuple[VLLMBackend, VLLMBackend]:
    """(policy, big): the suite's shared engines; the policy's stands in for TRL's colocated engine, which after
    TRL's weight sync holds exactly the policy's weights (here: both loaded from the same directory)."""
    return (tiny_engines.shared_vllm(str(engine_dirs["small"])), tiny_engines.shared_vllm(str(engine_dirs["big"])))


def rollout_on(policy_engine: str, big, engine_dirs, problems, tmp_path, llm=None):
    """An offload rollout of 2 problems x 2 generations on a real GRPOTrainer (TRL's vLLM off: with it on, TRL's
    own weight sync would run, which fails on CPU, see test_grpo_offload_step_on_trls_colocated_engine_on_cuda);
    ``llm`` is attached where TRL keeps its colocated engine."""
    tok = AutoTokenizer.from_pretrained(engine_dirs["small"])
    dataset = grpo_dataset(problems, tok)
    decoder = DecoderService(decode={"big_chunk_tokens": 8, "max_offload_tokens": 16})
    rollout = OffloadRollout(rollout_problems(problems, dataset), decoder, Route("split", small=None, big=big),
                             same_tokenizer=True, policy_engine=policy_engine)
    args = grpo_config("smoke", device="cpu", output_dir=str(tmp_path), max_completion_length=48)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(engine_dirs["small"]), reward_funcs=[by_position],
                          args=args, train_dataset=dataset, processing_class=tok, rollout_func=rollout)
    if llm is not None:
        trainer.vllm_generation = SimpleNamespace(llm=llm, enable_sleep_mode=False)
    prompts_batch = [row["prompt"] for row in dataset for _ in range(args.num_generations)]
    return rollout, trainer, rollout(prompts_batch, trainer)


@pytest.mark.slow
def test_vllm_policy_engine_rollout_advances_every_completion_together_with_the_hf_contract(
    vllm_engines, engine_dirs, toy_problems, tmp_path, monkeypatch
) -> None:
    vsmall, vbig = vllm_engines
    in_flight: list[int] = []  # the policy engine's requests in flight at each of its polls (= engine steps)
    poll = VLLMBackend.poll

    def counting_poll(self):
        if not self.owns_engine:
            in_flight.append(len(self._flights))
        return poll(self)

    monkeypatch.setattr(VLLMBackend, "poll", counting_poll)
    rollout, trainer, out = rollout_on("vllm", vbig, engine_dirs, toy_problems[:2], tmp_path / "v", llm=vsmall.llm)
    _, _, hf_out = rollout_on("hf", vbig, engine_dirs, toy_problems[:2], tmp_path / "h")

    # all four completions were in the policy engine's steps together; the borrowed backend left nothing behind
    assert max(in_flight) == len(out["completion_ids"]) == 4
    assert not vsmall.engine.has_unfinished_requests() and vsmall.llm is not None
    # the same contract as the hf engine's rollout
    assert set(out) == set(hf_out)
    tok = trainer.processing_class
    traces = [Trace.from_json(t) for t in out["traces"]]
    questions = [p.question for p in toy_problems[:2] for _ in range(2)]
    assert out["prompt_ids"] == [prompt_token_ids(tok, q) for q in questions]
    for ids, logps, mask, trace in zip(out["completion_ids"], out["logprobs"], out["env_mask"], traces, strict=True):
        assert len(ids) == len(logps) == len(mask) > 0
        assert mask.count(0) >= trace.tokens("big")  # the big model's tokens stay out of the loss
    assert sum(t.handoffs for t in traces) > 0 and sum(t.tokens("big") for t in traces) > 0
    # the engine IS the policy: what it sampled is likely under the HF policy (the log-probs TRL trains on), the
    # big model's text is not
    own = [lp for logps, mask in zip(out["logprobs"], out["env_mask"]) for lp, m in zip(logps, mask) if m]
    big = [lp for logps, mask in zip(out["logprobs"], out["env_mask"]) for lp, m in zip(logps, mask) if not m]
    assert statistics.fmean(own) > -1.0 > statistics.fmean(big)
    # the step's throughput, for notebook 03
    (row,) = rollout.history
    assert row["generated_tokens"] == sum(t.total_tokens for t in traces)
    assert row["decode_wall_s"] > 0 and row["tok_per_s"] == row["generated_tokens"] / row["decode_wall_s"]


@pytest.mark.gpu
@pytest.mark.slow
def test_grpo_offload_step_on_trls_colocated_engine_on_cuda(engine_dirs, toy_problems, tmp_path, with_distinct_chars):
    """A full training step with policy_engine vllm: TRL starts its colocated engine and syncs the policy's weights
    into it, the rollout decodes on it with a vLLM big model. GPU only: on CPU, vLLM 0.32 repacks the linear
    weights for oneDNN and drops the parameters that TRL 1.16's ``sync_weights`` loads into ('Parameter' object has
    no attribute 'weight_loader')."""
    before = state_snapshot(AutoModelForCausalLM.from_pretrained(engine_dirs["small"]))
    params = {**SMOKE_TRL, "device": "cuda", "max_steps": 1, "use_vllm": True, "vllm_mode": "colocate",
              "vllm_gpu_memory_utilization": 0.2, "vllm_max_model_length": 512,
              "rollout": {"policy_engine": "vllm", "big_backend": "vllm",
                          "big_backend_options": {"max_model_len": 512, "gpu_memory_utilization": 0.2},
                          "decode": {"big_chunk_tokens": 8, "max_offload_tokens": 16}}}
    metrics = run_grpo(engine_dirs["small"], engine_dirs["big"], toy_problems[:4], tmp_path / "grpo", mode="offload",
                       reward_names=["paper", "distinct_chars"], params=params, progress=False)
    (row,) = metrics["steps"]
    assert row["rollout/generated_tokens"] > 0 and row["rollout/tok_per_s"] > 0
    assert changed(before, tmp_path / "grpo")
