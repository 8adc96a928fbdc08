"""The sweep engine on the real packaged models (Gemma-3-270M, SmolLM2-135M) against a plain Hugging Face hook.

The reference is a fresh Hugging Face copy of the same dequantized weights (``run.packaged.load_packaged``, never
wrapped by the bridge) with a forward pre-hook scaling the chosen inputs of one layer's down projection. One task,
one layer, three prompts: the engine's target probabilities (baseline and amplified, positions "all" and "last")
must equal it within 1e-4 relative (float32; measured ~6e-6 on both). Skips where the packages are not installed.
"""
import pytest
import torch

import sna_utils as su
from helpers import hf_target_probs

NEURONS = (3, 17, 100, 512, 1000)


@pytest.mark.parametrize("name", ["gemma3-270m", "smollm2-135m"])
@torch.no_grad()
def test_engine_equals_hugging_face_on_the_real_model(real_model, name):
    model = real_model(name)
    hf = su.run.packaged.load_packaged(name)[0]
    task = su.load_tasks(["antonyms"])[0]
    items = [i for i in task.evaluation if len(su.target_tokens(model, i.target)) == 1][:3]
    prompts, targets = [i.prompt for i in items], [i.target for i in items]
    layer = su.n_layers(model) // 2
    state = su.run.engine.layer_state(model, su.encode_prompts(model, prompts), layer)
    configs = [su.run.engine.IDENTITY, su.run.engine.Config(NEURONS, 8.0)]
    base = hf_target_probs(hf, model, prompts, targets)
    for positions in ("all", "last"):
        got = su.run.engine.engine_metrics(model, state, layer, configs, positions, su.target_token_ids(model, items)).p
        want = hf_target_probs(hf, model, prompts, targets, layer, NEURONS, 8.0, positions)
        torch.testing.assert_close(got[0], base, rtol=1e-4, atol=0)
        torch.testing.assert_close(got[1], want, rtol=1e-4, atol=0)
        assert float((want / base - 1).abs().max()) > 1e-2, "the intervention must visibly move the probabilities"
