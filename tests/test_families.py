"""Every tested family against an independent Hugging Face computation (float64, random stand-ins).

The reference is the plain Hugging Face model (a fresh copy of the same random weights, never wrapped by
the bridge) with a forward pre-hook on the MLP's down projection that scales the chosen inputs: the
definition of a neuron for plain and gated MLPs alike. The kit's hooked path (``target_probs``) and its
sweep engine (``run_sweep``, positions "all" and "last") must both equal it within 1e-4 relative.
"""
import warnings

import pytest
import torch

import sna_utils as su
from helpers import DOWN_PROJ, LAYER, hf_target_probs, trim

FAMILIES = su.run.standins.TINY_FAMILIES


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """(kit model in float64, independent HF model in float64) of one family, the same random weights."""
    name = request.param
    hf = su.build_random_hf_model(name, seed=0).double()
    return su.load_model(name, device="cpu", dtype=torch.float64), hf


def _rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


def _off(a, b):
    """Largest difference relative to the largest value (no division by the zeros a residual can hold)."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("positions", ["all", "last"])
def test_target_probs_equal_hugging_face(family, tasks, positions):
    """``target_probs`` with an Intervention equals the HF pre-hook computation; the intervention moves it."""
    model, hf = family
    items = sorted(tasks[0].evaluation, key=lambda i: -len(i.prompt))[:4]
    prompts, targets = [i.prompt for i in items], [i.target for i in items]
    assert min(len(model.to_tokens(p)[0]) for p in prompts) > 4, "longer than the stand-ins' sliding windows"
    neurons = [1, 5, 9, 17, 33]
    for layer in (0, 1):
        iv = su.Intervention(layer, neurons, 6.0, positions)
        kit = su.target_probs(model, prompts, targets, iv)
        ref = hf_target_probs(hf, model, prompts, targets, layer, neurons, 6.0, positions)
        assert _rel(kit, ref) < 1e-4
        base = hf_target_probs(hf, model, prompts, targets)
        assert _rel(ref, base) > 1e-2, "the intervention must visibly move the probabilities"
        assert _rel(su.target_probs(model, prompts, targets), base) < 1e-4


def test_sweep_equals_hugging_face(family, tasks, neutral):
    """``run_sweep`` (the engine, both positions) equals the HF computation on every row: the baseline, the
    SNA neurons' probability and the random control's."""
    model, hf = family
    small, neu = trim(tasks, neutral, n_tasks=1, n_disc=6, n_eval=4)
    task = small[0]
    prompts, targets = [i.prompt for i in task.evaluation], [i.target for i in task.evaluation]
    base = hf_target_probs(hf, model, prompts, targets).mean()
    moved = 0.0
    for positions in ("all", "last"):
        df = su.run_sweep(model, small, [0, 1], [8], [0.0, 5.0], positions, neutral=neu, progress=False)
        assert len(df) == 4
        scores = {L: su.neuron_scores(model, [i.prompt for i in task.discovery], neu.discovery, L) for L in (0, 1)}
        for row in df.itertuples():
            for col, neurons in (("p_sna", su.top_neurons(scores[row.layer], row.k)),
                                 ("control_p_sna", su.random_neurons(su.d_mlp(model), row.k, 0, row.layer))):
                ref = hf_target_probs(hf, model, prompts, targets, row.layer, neurons, row.multiplier, positions)
                assert abs(getattr(row, col) - float(ref.mean())) <= 1e-4 * float(ref.mean()), (positions, row, col)
            assert abs(row.p_base - float(base)) <= 1e-4 * float(base)
            moved = max(moved, abs(row.p_sna / row.p_base - 1))
    assert moved > 1e-2, "the grid must visibly move the probabilities"


def _hf_module(hf, where: dict, default: str, layer: int) -> torch.nn.Module:
    return hf.get_submodule(where.get(hf.config.model_type, default).format(layer))


@torch.no_grad()
def test_mlp_out_weight_is_the_hugging_face_down_projection(family):
    """``engine.mlp_out_weight`` is the independent HF copy's down-projection weight as ``[d_mlp, d_model]`` (a
    Conv1D's own layout, a Linear's transposed) at every layer; a layer that does not exist is one SNAError."""
    from transformers.pytorch_utils import Conv1D

    model, hf = family
    for layer in range(su.n_layers(model)):
        proj = _hf_module(hf, DOWN_PROJ, "model.layers.{}.mlp.down_proj", layer)
        got = su.run.engine.mlp_out_weight(model, layer)
        assert got.shape == (su.d_mlp(model), model.cfg.d_model)
        torch.testing.assert_close(got, proj.weight if isinstance(proj, Conv1D) else proj.weight.t(), rtol=0, atol=0)
    with pytest.raises(su.SNAError, match="does not exist"):
        su.run.engine.mlp_out_weight(model, su.n_layers(model))


@torch.no_grad()
def test_neuron_push_is_the_change_hugging_face_measures(family, tasks):
    """Neurons' push computed from ``mlp_out_weight`` equals what a plain HF pre-hook multiplying those inputs of
    the down projection at each prompt's last token changes there: the projection's output by
    ``(m - 1) act[S] @ W_out[S]``, and the residual after the block by ``engine.neuron_push`` (through the post-MLP
    norm where a family has one, Gemma-2/3)."""
    model, hf = family
    batch = su.encode_prompts(model, [i.prompt for i in tasks[0].evaluation[:4]])
    rows = torch.arange(len(batch.last))
    for layer in (0, 1):
        proj = _hf_module(hf, DOWN_PROJ, "model.layers.{}.mlp.down_proj", layer)
        block = _hf_module(hf, LAYER, "model.layers.{}", layer)
        w_out = su.run.engine.mlp_out_weight(model, layer).double()

        def run(neurons=(), m=1.0):
            """(down projection's input, its output, the block's output) at the last tokens, ``neurons`` x ``m``."""
            seen, idx = {}, torch.tensor(list(neurons), dtype=torch.long)

            def scale(module, args):
                x = args[0].clone()
                seen["act"] = x[rows, batch.last]
                x[rows[:, None], batch.last[:, None], idx] *= m
                return (x,)

            handles = [proj.register_forward_pre_hook(scale),
                       proj.register_forward_hook(lambda mod, a, out: seen.update(out=out[rows, batch.last])),
                       block.register_forward_hook(lambda mod, a, out: seen.update(
                           resid=(out[0] if isinstance(out, tuple) else out)[rows, batch.last]))]
            try:
                hf(input_ids=batch.tokens)
            finally:
                for h in handles:
                    h.remove()
            return seen["act"], seen["out"], seen["resid"]

        act, out0, resid0 = run()
        for neurons, m in (([5], 4.0), ([1, 9, 17, 33], 0.0)):
            _, out, resid = run(neurons, m)
            assert _off(out - out0, (m - 1) * act[:, neurons] @ w_out[neurons]) < 1e-9
            change = resid - resid0
            assert float(change.norm(dim=-1).max()) > 1e-3 * float(resid0.norm(dim=-1).max()), "a visible push"
            assert _off(su.run.engine.neuron_push(model, layer, act, neurons, m), change) < 1e-5


@pytest.mark.parametrize("max_bytes", [1 << 30, 1], ids=["kept", "over-budget"])
@torch.no_grad()
def test_prompt_run_states_equal_the_bridges(family, tasks, max_bytes):
    """A ``PromptRun`` (the bridge to the first layer, then the engine's own blocks once) serves each later layer's
    residual and activations, and the unmodified run's final residual and keys and values, as the bridge's capture
    and a fresh run from that layer give them; a layer behind the last one served, or past its memory budget, comes
    from the bridge again."""
    from sna_utils.run import engine as E
    from sna_utils.run.prompt_run import PromptRun

    model, _ = family
    batch = su.encode_prompts(model, [i.prompt for i in tasks[0].evaluation[:6]])
    assert len(set((batch.last + 1).tolist())) > 1, "prompts of several lengths: padding must stay unseen"
    run = PromptRun(model, batch, [0, 1, 2], need_kv=True, max_bytes=max_bytes)
    eng = E.engine_weights(model)
    for layer in (0, 1, 2, 1):
        got, want = run.at(layer), E.layer_state(model, batch, layer)
        if layer == 0:  # within budget the later layers come from the one run, not from the bridge
            assert sorted(run.entering) == ([1, 2] if max_bytes > 1 else [])
        assert [g.index.tolist() for g in got.groups] == [g.index.tolist() for g in want.groups]
        for g, w in zip(got.groups, want.groups):
            # float64 models; where the bridge's attention and the engine's layer differ at all (Pythia, Phi-3) it is
            # by float32-softmax rounding (measured up to 3e-7), far inside the engine's 1e-4 agreement
            assert _off(g.resid_after, w.resid_after) < 1e-6 and _off(g.act, w.act) < 1e-6
        shared = got.base[E.arithmetic(eng.w_u.dtype)]
        within = max_bytes > 1 or layer == E.n_blocks(eng) - 1  # the last block's are none: they always fit
        assert shared[0] is run.out and (shared[1] is not None) == within, "the run is shared, its keys and \
            values only within budget"
        out, kv = E._unmodified(eng, got, layer, 1 << 12, need_kv=True)
        fresh_out, fresh_kv = E.run_unmodified(eng, *E.padded_residuals(want), layer, 1 << 12, need_kv=True)[:2]
        assert _off(out, fresh_out) < 1e-6
        if isinstance(kv.kv, dict):
            assert list(kv.kv) == list(fresh_kv.kv) == list(range(layer + 1, E.n_blocks(eng)))
        pairs = list(zip(kv.kv.values(), fresh_kv.kv.values()) if isinstance(kv.kv, dict) else zip(kv.kv, fresh_kv.kv))
        assert len(pairs) == E.n_blocks(eng) - 1 - layer
        for (k, v), (k0, v0) in pairs:
            real = torch.arange(k.shape[2]) < kv.last[:, None]  # padded keys differ and are masked
            assert k.shape == k0.shape and _off(k[:, :, real[0]], k0[:, :, real[0]]) < 1e-6
            assert (k - k0)[real[:, None, :, None].expand_as(k)].abs().max() < 1e-6 * k0.abs().max()
            assert (v - v0)[real[:, None, :, None].expand_as(v)].abs().max() < 1e-6 * v0.abs().max()


@pytest.mark.parametrize("config,kind,arch", [
    ("BertConfig", "an encoder-only", "BertForMaskedLM"),
    ("T5Config", "an encoder-decoder", "T5ForConditionalGeneration"),
])
def test_unsupported_model_refused_before_loading(tmp_path, config, kind, arch):
    """A checkpoint folder holding only an encoder's config: one SNAError naming the architecture and what
    is supported, from the config alone (there are no weights to load, so any later step would fail otherwise)."""
    import transformers

    getattr(transformers, config)(architectures=[arch], num_layers=2, num_hidden_layers=2).save_pretrained(tmp_path)
    with pytest.raises(su.SNAError, match=rf"is {kind} .*architecture {arch}.*The kit runs decoder-only.*Llama"):
        su.load_model(str(tmp_path), device="cpu")


def test_wrapping_an_encoder_is_refused():
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(su.SNAError, match="encoder-only.*BertForMaskedLM"):
        su.wrap_hf_model(bert, None, "bert", "cpu")


def test_any_hub_id_fails_fast_offline(monkeypatch, tmp_path):
    """A Hub id the kit has no name for still goes to the Hub, and fails at once (not 'Unknown model') offline."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    t = time.perf_counter()
    with pytest.raises(su.ModelUnavailableError, match="'Qwen/Qwen2.5-0.5B'.*not reachable"):
        su.load_model("Qwen/Qwen2.5-0.5B")
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize("name", ["tiny", "tiny-llama", "tiny-phi3"])
def test_flop_floor_counts_each_familys_matrices(name):
    """One block's floor equals 2 x seq x the weights of its matrices (gated MLPs have three, grouped-query
    attention narrower keys and values) plus the attention square, counted from the HF model itself."""
    model = su.load_model(name, device="cpu")
    hf = su.build_random_hf_model(name)
    block = hf.transformer.h[-1] if name == "tiny" else hf.model.layers[-1]
    weights = sum(p.numel() for n, p in block.named_parameters() if p.dim() == 2)
    seq, d = 7, model.cfg.d_model
    floor = su.grid_flop_floor(model, su.n_layers(model) - 1, 1, 1, seq) - 2 * d * model.cfg.d_vocab
    assert floor == 2 * seq * weights + 4 * seq * seq * d
    shape = su.run.profiles.model_shape(name)  # what the pre-flight counts, without loading weights
    for layer in (0, 2):
        assert su.grid_flop_floor(shape, layer, 3, 2, seq) == su.grid_flop_floor(model, layer, 3, 2, seq)


def test_hub_weights_load_from_safetensors_only(monkeypatch, tmp_path):
    """A Hub id loads with use_safetensors=True (no pickled weights run); a local folder keeps its own files."""
    import transformers

    seen = []

    def record(source, **kwargs):
        seen.append((source, kwargs.get("use_safetensors")))
        raise RuntimeError("stop before any download")

    monkeypatch.setattr(su.core, "checkpoint_source", lambda name, known: name)
    monkeypatch.setattr(su.run.families, "require_hub", lambda *args, **kwargs: None)  # as if cached
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda source, **kw: transformers.GPT2Config())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("org/model", str(folder)):
        with pytest.raises(RuntimeError, match="stop before any download"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # offline: revision lookup needs the Hub (tests/test_provenance.py)
            su.load_model(name, device="cpu")
    assert seen == [("org/model", True), (str(folder), None)]


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_parameter_count_from_the_config_alone_equals_the_built_model(name):
    hf = su.build_random_hf_model(name)
    assert su.run.families.parameter_count(hf.config) == sum(p.numel() for p in hf.parameters())
