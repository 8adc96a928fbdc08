"""Core of the kit: loading, tasks, discovery, amplification, measurement, zones.

The reference for every number is an independent plain computation: a Hugging Face
model with the same random weights, run one prompt at a time, with a PyTorch forward
hook on the MLP activation module.
"""
import importlib.util
import math
import os
import warnings

import pytest
import torch
from transformers import GPT2TokenizerFast

import sna_utils as su

PROMPTS = ["The cat sat on the", "Hello", "One, two, three, four, five, six and", "def f(x):\n    return"]
TARGETS = [" mat", " world", " seven", " x"]


def _act_module(hf, layer):
    return hf.transformer.h[layer].mlp.act if hf.config.model_type == "gpt2" else hf.gpt_neox.layers[layer].mlp.act


def _reference_probs(hf, prompts, targets, layer=None, neurons=(), multiplier=1.0, positions="all"):
    """Plain HF forward, one prompt at a time, scaling neurons with a forward hook."""
    tok = GPT2TokenizerFast.from_pretrained(os.environ["SNA_GPT2_TOKENIZER"])
    bos = [tok.eos_token_id] if hf.config.model_type == "gpt2" else []  # GPT-2 convention: BOS = <|endoftext|>
    handle = None
    if layer is not None:
        idx = list(neurons)

        def hook(module, inputs, output):
            out = output.clone()
            sl = slice(None) if positions == "all" else slice(-1, None)
            out[:, sl, idx] = output[:, sl, idx] * multiplier
            return out

        handle = _act_module(hf, layer).register_forward_hook(hook)
    try:
        probs = []
        with torch.no_grad():
            for p, t in zip(prompts, targets):
                ids = torch.tensor([bos + tok(p)["input_ids"]])
                logits = hf(ids).logits[0, -1]
                probs.append(logits.softmax(-1)[tok(t)["input_ids"][0]])
        return torch.stack(probs)
    finally:
        if handle is not None:
            handle.remove()


@pytest.fixture(scope="module", params=["tiny", "tiny-pythia"])
def pair(request):
    """A kit model and an independent HF copy with identical random weights."""
    model = su.load_model(request.param, device="cpu", seed=3)
    hf = su.build_random_hf_model(request.param, seed=3)
    return model, hf


def test_baseline_probs_match_plain_hf(pair):
    model, hf = pair
    ours = su.target_probs(model, PROMPTS, TARGETS)
    ref = _reference_probs(hf, PROMPTS, TARGETS)
    assert (ref > 1e-7).all()
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize("positions", ["all", "last"])
@pytest.mark.parametrize("multiplier", [0.0, 3.0, 10.0])
def test_sna_probs_match_plain_hf_hook(pair, positions, multiplier):
    model, hf = pair
    layer, neurons = 1, [5, 17, 42, 99, 200]
    iv = su.Intervention(layer, neurons, multiplier, positions)
    ours = su.target_probs(model, PROMPTS, TARGETS, iv)
    ref = _reference_probs(hf, PROMPTS, TARGETS, layer, neurons, multiplier, positions)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=0)
    base = _reference_probs(hf, PROMPTS, TARGETS)
    assert ((ours - base).abs() / base).max() > 1e-2, "the intervention must really move the probabilities"


def test_batched_equals_one_at_a_time(any_tiny):
    batched = su.target_probs(any_tiny, PROMPTS, TARGETS)
    single = torch.cat([su.target_probs(any_tiny, [p], [t]) for p, t in zip(PROMPTS, TARGETS)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=0)
    iv = su.Intervention(2, [1, 2, 3], 7.0, "last")
    batched = su.target_probs(any_tiny, PROMPTS, TARGETS, iv)
    single = torch.cat([su.target_probs(any_tiny, [p], [t], iv) for p, t in zip(PROMPTS, TARGETS)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=0)


def test_multiplier_one_changes_nothing(any_tiny):
    base = su.next_token_logits(any_tiny, PROMPTS)
    same = su.next_token_logits(any_tiny, PROMPTS, su.Intervention(1, list(range(50)), 1.0))
    assert torch.equal(base, same)


def test_multiplier_zero_equals_zeroing(any_tiny):
    neurons = [3, 8, 13]

    def zero(act, hook):
        act = act.clone()
        act[..., neurons] = 0.0
        return act

    with any_tiny.hooks(fwd_hooks=[(su.hook_name(2), zero)]):
        zeroed = su.next_token_logits(any_tiny, PROMPTS)
    ablated = su.next_token_logits(any_tiny, PROMPTS, su.Intervention(2, neurons, 0.0))
    torch.testing.assert_close(ablated, zeroed, rtol=0, atol=0)
    assert not torch.equal(ablated, su.next_token_logits(any_tiny, PROMPTS))


def test_model_unchanged_after_amplify_even_after_exception(tiny):
    before = su.next_token_logits(tiny, PROMPTS)
    iv = su.Intervention(0, [1, 2], 20.0)
    with su.amplify(tiny, iv):
        during = su.next_token_logits(tiny, PROMPTS)
    assert not torch.equal(before, during)
    assert torch.equal(before, su.next_token_logits(tiny, PROMPTS))
    with pytest.raises(RuntimeError, match="boom"):
        with su.amplify(tiny, iv):
            raise RuntimeError("boom")
    assert torch.equal(before, su.next_token_logits(tiny, PROMPTS))
    assert not tiny.hook_dict[su.hook_name(0)].fwd_hooks


def test_results_are_deterministic(tiny, tasks, neutral):
    t = tasks[0]
    a = su.neuron_scores(tiny, [i.prompt for i in t.discovery], neutral.discovery, 1)
    b = su.neuron_scores(tiny, [i.prompt for i in t.discovery], neutral.discovery, 1)
    assert torch.equal(a, b)
    iv = su.Intervention(1, su.top_neurons(a, 10), 5.0)
    x = su.measure(tiny, t.evaluation, iv, neutral.heldout)
    y = su.measure(tiny, t.evaluation, iv, neutral.heldout)
    assert x[1] == y[1]
    other = su.load_model("tiny", device="cpu")  # a second load gives the same weights
    assert torch.equal(su.target_probs(other, PROMPTS, TARGETS), su.target_probs(tiny, PROMPTS, TARGETS))


# --- discovery ---------------------------------------------------------------

def test_discovery_finds_planted_neurons(tiny):
    """A model whose chosen neurons fire on a task marker word: discovery must return exactly them."""
    planted = [7, 70, 123, 200]
    task_prompts = [f"Question {i}: compute the zorblax of {i}" for i in range(12)]
    neutral_prompts = [f"Yesterday {i} people walked to the market and bought" for i in range(12)]
    marker = torch.tensor(tiny.to_tokens(" zorblax", prepend_bos=False)[0].tolist())
    seen = {}

    def remember_tokens(tokens, hook):
        seen["has_marker"] = torch.isin(tokens, marker).any(-1)  # [batch]
        return tokens

    def plant(act, hook):
        boost = torch.zeros_like(act)
        boost[..., planted] = 10.0
        return act + boost * seen["has_marker"][:, None, None].to(act.dtype)

    with tiny.hooks(fwd_hooks=[("embed.hook_in", remember_tokens), (su.hook_name(1), plant)]):
        scores = su.neuron_scores(tiny, task_prompts, neutral_prompts, 1)
        z = su.neuron_scores(tiny, task_prompts, neutral_prompts, 1, method="zscore")
    assert sorted(su.top_neurons(scores, 4)) == planted
    assert sorted(su.top_neurons(z, 4)) == planted
    # without the planted response, they are not what discovery finds
    plain = su.neuron_scores(tiny, task_prompts, neutral_prompts, 1)
    assert sorted(su.top_neurons(plain, 4)) != planted


def test_top_neurons_ties_break_by_lower_index():
    scores = torch.tensor([1.0, 3.0, 3.0, 0.5, 3.0])
    assert su.top_neurons(scores, 3) == [1, 2, 4]
    assert su.top_neurons(scores, 4) == [1, 2, 4, 0]


def test_random_neurons_fixed_and_nested():
    a = su.random_neurons(3072, 50, seed=0, layer=4)
    assert a == su.random_neurons(3072, 50, seed=0, layer=4)
    assert su.random_neurons(3072, 10, seed=0, layer=4) == a[:10]
    assert len(set(a)) == 50
    assert a != su.random_neurons(3072, 50, seed=0, layer=5)


# --- tasks -----------------------------------------------------------------------

def test_twelve_tasks_with_enough_items(tasks):
    """At least 160 items a task: >= 80 discovery, >= 40 selection and >= 40 test prompts."""
    assert len(tasks) == 12
    assert {t.category for t in tasks} == {"mathematics", "poetry", "coding", "logical_reasoning",
                                          "abstract_semantics"}
    for t in tasks:
        assert len(t.items) >= 160, t.name  # README, docs/method.md and notebook 01: "at least 160"
        assert abs(len(t.discovery) - len(t.evaluation)) <= 1
        assert not set(t.discovery) & set(t.evaluation)
        assert min(len(part) for part in su.split_selection_test(t)) >= 40, t.name
    assert len(su.load_neutral()) >= 100


def test_selection_and_test_parts_share_no_prompt(tasks):
    for t in tasks:
        selection, test = su.split_selection_test(t)
        assert not {i.prompt for i in selection} & {i.prompt for i in test}
        assert sorted(selection + test, key=t.evaluation.index) == list(t.evaluation)
        assert not {i.prompt for i in selection + test} & {i.prompt for i in t.discovery}


def test_selection_split_is_fixed_by_seed(tasks):
    t = tasks[0]
    assert su.split_selection_test(t, seed=3) == su.split_selection_test(t, seed=3)
    assert su.split_selection_test(t, seed=3) != su.split_selection_test(t, seed=4)
    assert su.split_selection_test(t) == su.split_selection_test(su.load_tasks([t.name])[0])


def _make_tasks_script():
    spec = importlib.util.spec_from_file_location("make_tasks", su.KIT_ROOT / "scripts" / "make_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_committed_task_files():
    """scripts/make_tasks.py rebuilds every data/tasks/*.json byte for byte (its templated items included)."""
    make_tasks = _make_tasks_script()
    texts = make_tasks.build_all(make_tasks.gpt2_tokenizer())
    for path, text in texts.items():
        assert text == path.read_text(encoding="utf-8"), path.name
    assert {p.name for p in texts} == {p.name for p in make_tasks.TASK_DIR.glob("*.json")} | {"neutral_formats.json"}


def test_every_item_keeps_the_data_rules(tasks):
    """Targets tokenize as the prompt's next token, prompts are distinct, short and end without a space."""
    make_tasks = _make_tasks_script()
    tok = make_tasks.gpt2_tokenizer()
    for t in tasks:
        assert len({i.prompt for i in t.items}) == len(t.items), t.name
        bad = [(i.prompt, why) for i in t.items if (why := make_tasks.item_problem(tok, i.prompt, i.target))]
        assert not bad, (t.name, bad[:3])
    assert make_tasks.item_problem(tok, "1 + 1 =", " 2") is None
    assert "not one GPT-2 token" in make_tasks.item_problem(tok, "import numpy as", " npx")
    assert "ends with a space" in make_tasks.item_problem(tok, "1 + 1 = ", "2")


def test_split_is_fixed_by_seed(tasks):
    again = su.load_tasks()
    assert [t.evaluation for t in again] == [t.evaluation for t in tasks]
    other = su.load_tasks(seed=1)
    assert [t.evaluation for t in other] != [t.evaluation for t in tasks]


def test_every_target_is_one_real_gpt2_token(tasks):
    """With the real GPT-2 tokenizer files: every target of every task is exactly one token."""
    tok = GPT2TokenizerFast.from_pretrained(os.environ["SNA_GPT2_TOKENIZER"])
    bad = [(t.name, i.target) for t in tasks for i in t.items if len(tok(i.target)["input_ids"]) != 1]
    assert not bad
    assert tok(" 12")["input_ids"] == [1105]  # the real vocabulary, not a stand-in


def test_tokenizer_is_real_gpt2():
    tok = su.gpt2_tokenizer()
    assert tok("Hello world")["input_ids"] == [50256, 15496, 995]
    assert len(tok) == 50257


# --- bad input -------------------------------------------------------------------

def test_bad_targets_are_named(tiny):
    with pytest.raises(su.SNAError, match=r"item 1 .*'Hello'.* 2 tokens"):
        su.target_probs(tiny, ["A", "Hello"], [" b", " hello world"])
    with pytest.raises(su.SNAError, match="0 tokens"):
        su.target_token_ids(tiny, [su.Item("x", "")])


@pytest.mark.parametrize("layer", [-1, 3, 99, 1.5])
def test_bad_layer(tiny, layer):
    with pytest.raises(su.SNAError, match="does not exist"):
        su.neuron_scores(tiny, ["a b"], ["c d"], layer)
    with pytest.raises(su.SNAError, match="does not exist"):
        su.target_probs(tiny, ["a"], [" b"], su.Intervention(layer, [1], 2.0))


@pytest.mark.parametrize("k", [0, -3, 257, 10_000])
def test_bad_k(tiny, k):
    with pytest.raises(su.SNAError, match="out of range"):
        su.top_neurons(torch.zeros(256), k)
    with pytest.raises(su.SNAError, match="out of range"):
        su.check_k(tiny, k)


@pytest.mark.parametrize("m", [float("nan"), float("inf"), -float("inf"), "2"])
def test_bad_multiplier(m):
    with pytest.raises(su.SNAError, match="finite number"):
        su.Intervention(0, [1], m)


def test_bad_positions_and_neurons(tiny):
    with pytest.raises(su.SNAError, match="positions"):
        su.Intervention(0, [1], 2.0, "first")
    with pytest.raises(su.SNAError, match="outside"):
        su.target_probs(tiny, ["a"], [" b"], su.Intervention(0, [256], 2.0))


def test_empty_prompt_lists(tiny):
    with pytest.raises(su.SNAError, match="empty"):
        su.target_probs(tiny, [], [])
    with pytest.raises(su.SNAError, match="reference_prompts is empty"):
        su.neuron_scores(tiny, ["a"], [], 0)
    with pytest.raises(su.SNAError, match="empty"):
        su.next_token_logits(tiny, ["ok", "  "])


def test_prompt_longer_than_context(tiny):
    long = "word " * (tiny.cfg.n_ctx + 5)
    with pytest.raises(su.SNAError, match="longer than the model's context"):
        su.target_probs(tiny, ["short", long], [" a", " b"])


def test_target_without_leading_space_after_a_word_warns(tiny):
    """'8' after '... is' reads as 'is8': almost always a mistake for GPT-2's tokenizer; the warning names it."""
    with pytest.warns(UserWarning, match=r"item 1 \('Two plus six is' -> '8'\).*' 8'"):
        su.target_probs(tiny, ["One plus one is", "Two plus six is"], [" 2", "8"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for the usual forms
        su.target_probs(tiny, ["One plus one is", "x = (", "The answer:"], [" 2", "1", " yes"])


def test_hub_names_resolve_to_kit_names(monkeypatch, tmp_path):
    assert su.core.kit_model_name("gpt2") == su.core.kit_model_name("openai-community/gpt2") == "gpt2-small"
    assert su.core.kit_model_name("EleutherAI/pythia-160m") == "pythia-160m"
    assert su.core.kit_model_name("tiny") == "tiny" and su.n_layers_of("openai-community/gpt2-medium") == 24
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    for name in ("gpt2", "openai-community/gpt2"):  # reach the Hub step (offline here), not "Unknown model"
        with pytest.raises(su.ModelUnavailableError, match=r"model 'gpt2-small' \('openai-community/gpt2'\)"):
            su.load_model(name)


def test_model_errors_say_what_is_wrong(monkeypatch, tmp_path):
    with pytest.raises(su.SNAError, match="Model folder not found: .*no-such-checkpoint"):
        su.load_model(str(tmp_path / "no-such-checkpoint"))
    with pytest.raises(su.SNAError, match="Model folder not found"):
        su.load_model("./checkpoints/gpt2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(su.SNAError, match="'cuda': torch sees no CUDA device"):
        su.load_model("tiny", "cuda")
    assert su.core.check_device(None) == "cpu" and su.core.check_device("cpu") == "cpu"


def test_unavailable_messages_end_with_the_offline_quick_start(monkeypatch, tmp_path):
    monkeypatch.setenv("SNA_GPT2_TOKENIZER", str(tmp_path))
    with pytest.raises(su.SNAError, match=r"Offline quick-start.*make run PROFILE=smoke\.$"):
        su.gpt2_tokenizer()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(su.ModelUnavailableError, match=r"Offline quick-start.*make run PROFILE=smoke\.$"):
        su.load_model("pythia-160m")


def test_unknown_model_and_unreachable_hub(monkeypatch, tmp_path):
    with pytest.raises(su.SNAError, match="Unknown model 'gpt5'"):
        su.load_model("gpt5")
    with pytest.raises(su.SNAError, match="not a Hugging Face checkpoint"):
        su.load_model(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    import time
    t = time.perf_counter()
    with pytest.raises(su.ModelUnavailableError, match="random:gpt2-medium"):
        su.load_model("gpt2-medium")
    assert time.perf_counter() - t < 5, "an unreachable Hub must fail fast"


def test_local_checkpoint_folder_loads(tmp_path):
    hf = su.build_random_hf_model("tiny", seed=5)
    hf.save_pretrained(tmp_path)
    su.gpt2_tokenizer().save_pretrained(tmp_path)
    model = su.load_model(str(tmp_path), device="cpu")
    assert su.n_layers(model) == 3 and su.model_revision(model) == f"local folder {tmp_path.resolve()}"
    with pytest.raises(su.SNAError, match="revision='main' applies to Hub ids, not to the local folder"):
        su.load_model(str(tmp_path), device="cpu", revision="main")
    ref = su.load_model("tiny", device="cpu", seed=5)
    assert su.model_revision(ref) == "random weights, seed 5"
    torch.testing.assert_close(su.target_probs(model, PROMPTS, TARGETS), su.target_probs(ref, PROMPTS, TARGETS),
                               rtol=1e-5, atol=0)


def test_missing_task_file(tmp_path):
    with pytest.raises(su.SNAError, match="No task files"):
        su.load_tasks(data_dir=tmp_path)
    with pytest.raises(su.SNAError, match="Unknown task"):
        su.load_tasks(["addition", "telepathy"])
    with pytest.raises(su.SNAError, match="Neutral prompt file not found"):
        su.load_neutral(tmp_path)


def test_task_file_not_json_names_file_and_line(tmp_path):
    (tmp_path / "tasks").mkdir()
    bad = tmp_path / "tasks" / "broken.json"
    bad.write_text('{"name": "broken",\n "category": "x",\n "items": [{"prompt": "a" "target": "b"}]}\n')
    with pytest.raises(su.SNAError, match=r"broken\.json is not valid JSON: .* line 3, column"):
        su.load_tasks(data_dir=tmp_path)


# --- zones and metrics ----------------------------------------------------------

@pytest.mark.parametrize("p,zone", [(0.0, 1), (0.0699, 1), (0.07, 2), (0.1, 2), (0.10001, 3), (1.0, 3)])
def test_zone_boundaries(p, zone):
    assert su.zone_of(p) == zone


def test_zone_rejects_non_probability():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(su.SNAError):
            su.zone_of(bad)


def test_metrics_against_hand_computation(tiny, tasks, neutral):
    t = tasks[1]
    iv = su.Intervention(2, [4, 9, 77], 6.0)
    base, out = su.measure(tiny, t.evaluation, iv, neutral.heldout)
    prompts, targets = [i.prompt for i in t.evaluation], [i.target for i in t.evaluation]
    p0 = su.target_probs(tiny, prompts, targets)
    p1 = su.target_probs(tiny, prompts, targets, iv)
    assert math.isclose(out.improvement_pct, 100 * (p1.mean() - p0.mean()).item() / p0.mean().item(), rel_tol=1e-5)
    assert out.success_rate == pytest.approx((p1 > p0).float().mean().item())
    n0 = su.next_token_logits(tiny, neutral.heldout).softmax(-1)
    n1 = su.next_token_logits(tiny, neutral.heldout, iv).softmax(-1)
    kl = (n0 * (n0.log() - n1.log())).sum(-1).mean().item()
    assert out.side_effect_kl == pytest.approx(kl, rel=1e-3)
    assert out.side_effect_kl > 0


def test_unknown_score_method_rejected_everywhere(tiny, tasks, neutral):
    with pytest.raises(su.SNAError, match="Unknown scoring method 'max'"):
        su.neuron_scores(tiny, ["a b"], ["c d"], 0, method="max")
    with pytest.raises(su.SNAError, match="Unknown scoring method 'max'"):
        su.scores_from_activations(torch.zeros(3, 4), torch.zeros(3, 4), "max")
    with pytest.raises(su.SNAError, match="Unknown scoring method 'max'"):
        su.run_sweep(tiny, tasks[:1], [0], [1], [2.0], neutral=neutral, score_method="max", progress=False)


def test_restrict_to_single_token(tiny, small):
    t, _ = small
    bad = su.Task("x", "poetry", "", t[0].discovery + (su.Item("Roses are", " red roses"),), t[0].evaluation)
    with pytest.warns(UserWarning, match=r"1 items left out: .* not one token for tiny's tokenizer \(x 1\)"):
        kept, dropped = su.restrict_to_single_token(tiny, [bad, t[1]])
    assert [len(k.discovery) for k in kept] == [len(t[0].discovery), len(t[1].discovery)]
    assert dropped.to_dict("records") == [dict(task="x", half="discovery", prompt="Roses are", target=" red roses",
                                               n_tokens=2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report when every target is one token
        assert su.load_tasks(["addition"], model=tiny) == su.load_tasks(["addition"])
    empty = su.Task("y", "poetry", "", (su.Item("a", " b c"),), t[0].evaluation)
    with pytest.raises(su.SNAError, match="no single-token targets"):
        su.restrict_to_single_token(tiny, [empty])
    with pytest.warns(UserWarning, match=r"1 items left out.*\(y 1\)"):  # a task left out whole, counted
        kept, dropped = su.restrict_to_single_token(tiny, [empty, t[1]], drop_empty=True)
    assert [k.name for k in kept] == [t[1].name] and dropped["task"].tolist() == ["y"]


def test_one_task_name_is_one_task():
    """``load_tasks("addition")`` is the task addition, not one task per letter."""
    assert su.load_tasks("addition") == su.load_tasks(["addition"])
    with pytest.raises(su.SNAError, match=r"Unknown task\(s\) \['additio'\]"):
        su.load_tasks("additio")


def test_a_negative_multiplier_warns_that_it_flips_signs():
    with pytest.warns(UserWarning, match="negative: it flips the sign"):
        su.Intervention(0, [1], -2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 (ablation) and amplifications pass without a word
        su.Intervention(0, [1], 0.0), su.Intervention(0, [1], 5.0)


def test_gpt2_prompts_keep_the_papers_bos(tiny):
    """GPT-2 (and its stand-ins) read every prompt after a BOS, as the paper's TransformerLens runs did."""
    assert su.prompt_convention(tiny) == su.core.BOS_PREPENDED
    ids = su.encode_prompts(tiny, ["The cat sat"]).tokens[0].tolist()
    assert ids[0] == tiny.tokenizer.bos_token_id and ids[1:] == su.target_tokens(tiny, "The cat sat")


@pytest.mark.parametrize("name, first", [("smollm2-135m", None), ("gemma3-270m", "<bos>")])
def test_real_models_read_prompts_as_their_tokenizers_write_them(real_model, name, first):
    """SmolLM2: no BOS (its BOS is the chat token <|im_start|>, which its tokenizer never adds to plain text);
    Gemma-3: the <bos> its tokenizer adds. Not the bridge's BOS-prepending tokenizer."""
    model = real_model(name)
    assert su.prompt_convention(model) == su.core.TOKENIZER_OWN
    batch = su.encode_prompts(model, ["The capital of France is", "Hi"])
    plain = su.target_tokens(model, "The capital of France is")
    row = batch.tokens[0, : int(batch.last[0]) + 1].tolist()
    assert row == ([] if first is None else [model.tokenizer.convert_tokens_to_ids(first)]) + plain
    assert "<|im_start|>" not in model.tokenizer.convert_ids_to_tokens(row)
