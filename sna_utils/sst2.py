"""The external check on GLUE SST-2: sentiment as a next-token task, scored per example and per zone.

Loads SST-2 (strict TSV reader or the Hub), cuts the validation set into a selection and a test part,
finds sentiment neurons on train sentences only (three discovery references), scores every validation
example before SNA, after it and with control neurons over a small grid (``run_sst2_grid``, for
``sst2_heldout``; on the sweep engine, the plain hooked loop on request), and reports by METHOD's zones
of the baseline probability and by 2-way confidence bands, per true label. Imports ``core``, ``engine``, ``explore``, ``hub``, ``stats`` and ``sst2_heldout``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .core import (ZONE_NAMES, Intervention, Positions, _split_seed, check_k, check_layer, check_multiplier,
                   check_positions, check_prompts, check_score_method, d_mlp, encode_prompts, last_token_activations,
                   load_neutral, model_name, next_token_logits, random_neurons, rank_neurons, scores_from_activations,
                   split_half, split_neutral, target_token_ids, zone_of)
from .errors import SNAError
from .show.explore import neuron_overlap
from .run.engine import Config, engine_token_probs, layer_state
from .run.hub import require_hub
from .judge.sst2_heldout import ARMS, label_outcomes
from .judge.stats import log_odds


SST2_TEMPLATE = "Review: {sentence}\nSentiment:"


SST2_LABEL_WORDS = (" negative", " positive")  # label 0, label 1


SST2_HUB_ID = "nyu-mll/glue"


SST2_FILES = {"validation": "dev.tsv", "train": "train.tsv"}


DISCOVERY_MODES = {  # discovery reference: what the train prompts are contrasted with
    "neutral": "SST-2 train prompts vs the neutral discovery prose (the original reading)",
    "template": "SST-2 train prompts vs the neutral discovery prose in the same 'Sentiment:' template",
    "contrast": "positive vs negative train prompts, either sign (|mean difference|)",
}


def check_discovery(discovery: str) -> str:
    """An SST-2 discovery mode (``DISCOVERY_MODES``), or an SNAError naming them."""
    if discovery not in DISCOVERY_MODES:
        raise SNAError(f"Unknown SST-2 discovery {discovery!r}: choose one of {sorted(DISCOVERY_MODES)}.")
    return discovery


def _read_sst2_tsv(path: Path) -> pd.DataFrame:
    """Strictly parse a GLUE SST-2 TSV (header ``sentence\tlabel``); errors name the line."""
    if not path.is_file():
        raise SNAError(f"SST-2 file not found: {path}")
    sentences, labels = [], []
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["sentence", "label"]:
            raise SNAError(f"{path}, line 1: header must be 'sentence<TAB>label', got {header!r}.")
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2:
                raise SNAError(f"{path}, line {lineno}: expected 2 tab-separated columns, got {len(fields)}.")
            sentence, label = fields
            if not sentence.strip():
                raise SNAError(f"{path}, line {lineno}: empty sentence.")
            if label not in ("0", "1"):
                raise SNAError(f"{path}, line {lineno}: label must be 0 or 1, got {label!r}.")
            sentences.append(sentence)
            labels.append(int(label))
    return pd.DataFrame({"sentence": sentences, "label": labels})


def load_sst2(split: str = "validation", data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """GLUE SST-2 ``split`` as a DataFrame (sentence, label): from ``data_dir``/``$SNA_SST2_DIR`` TSVs or the Hub."""
    if split not in SST2_FILES:
        raise SNAError(f"SST-2 split {split!r}: choose one of {sorted(SST2_FILES)}.")
    data_dir = data_dir or os.environ.get("SNA_SST2_DIR")
    if data_dir:
        return _read_sst2_tsv(Path(data_dir) / SST2_FILES[split])
    require_hub(SST2_HUB_ID, "README.md", "GLUE SST-2",
                 "Connect once (datasets caches it), or set SNA_SST2_DIR to a folder with GLUE's dev.tsv and "
                 "train.tsv.", repo_type="dataset")
    import datasets

    ds = datasets.load_dataset(SST2_HUB_ID, "sst2", split=split)
    return pd.DataFrame({"sentence": ds["sentence"], "label": ds["label"]})


def sst2_prompts(sentences: Iterable[str], template: str = SST2_TEMPLATE) -> list[str]:
    """Fill the template with each sentence (surrounding whitespace stripped)."""
    return [template.format(sentence=s.strip()) for s in sentences]


def check_sst2_setup(model, template: str, label_words: Sequence[str]) -> torch.Tensor:
    """Check the template has a ``{sentence}`` slot and the two label words are distinct single tokens."""
    if "{sentence}" not in template:
        raise SNAError(f"SST-2 template {template!r} has no '{{sentence}}' placeholder.")
    if len(label_words) != 2 or label_words[0] == label_words[1]:
        raise SNAError(f"Give two distinct label words (negative, positive), got {label_words!r}.")
    return target_token_ids(model, list(label_words), what="label word")


def score_sst2(model, data: pd.DataFrame, intervention: Intervention | None = None,
               template: str = SST2_TEMPLATE, label_words: Sequence[str] = SST2_LABEL_WORDS,
               batch_size: int = 32) -> pd.DataFrame:
    """Per example: p of the correct label word, 2-way P(positive), prediction and correctness."""
    ids = check_sst2_setup(model, template, label_words)
    probs = label_probs(model, data["sentence"], ids, intervention, template, batch_size)
    return label_outcomes(probs[:, 0], probs[:, 1], data["label"].to_numpy()).set_axis(data.index)


def label_probs(model, sentences: Iterable[str], ids: torch.Tensor, intervention: Intervention | None = None,
                template: str = SST2_TEMPLATE, batch_size: int = 32) -> np.ndarray:
    """Full-vocabulary next-token probabilities of the two label words ``ids`` ``[n, 2]`` (negative, positive)."""
    logits = next_token_logits(model, sst2_prompts(sentences, template), intervention, batch_size)
    return logits.double().softmax(-1)[:, ids].numpy()


def sst2_split(data: pd.DataFrame, seed: int = 0) -> pd.Series:
    """Each validation example's part, 'selection' or 'test' (a fixed-seed half each, no example in both)."""
    selection, _ = split_half(list(data.index), _split_seed(seed, "sst2:selection"))
    return pd.Series(np.where(data.index.isin(selection), "selection", "test"), index=data.index, name="part")


def discovery_prompts(train: pd.DataFrame, discovery: str = "neutral", neutral: Sequence[str] | None = None,
                      template: str = SST2_TEMPLATE) -> tuple[list[str], list[str]]:
    """(prompts, reference prompts) of a discovery mode (``DISCOVERY_MODES``) from train sentences only."""
    check_discovery(discovery)
    if discovery == "contrast":
        pos, neg = (train.loc[train["label"] == lab, "sentence"] for lab in (1, 0))
        if len(pos) < 1 or len(neg) < 1:
            raise SNAError("Contrast discovery needs positive and negative train sentences in the sample.")
        return sst2_prompts(pos, template), sst2_prompts(neg, template)
    neutral = check_prompts(list(neutral if neutral is not None else split_neutral(load_neutral()).discovery),
                            "neutral prompts")
    reference = sst2_prompts(neutral, template) if discovery == "template" else neutral
    return sst2_prompts(train["sentence"], template), reference


def sst2_scores(model, layers: Sequence[int], n_train: int = 256, seed: int = 0, discovery: str = "neutral",
                neutral: Sequence[str] | None = None, template: str = SST2_TEMPLATE,
                data_dir: str | os.PathLike | None = None, method: str = "mean_diff") -> dict[int, torch.Tensor]:
    """Discovery scores ``{layer: [d_mlp]}`` from a fixed-seed sample of SST-2 *train* sentences."""
    layers = [check_layer(model, L) for L in layers]
    check_score_method(method)
    check_discovery(discovery)
    train = load_sst2("train", data_dir)
    sample = train.sample(n=min(n_train, len(train)), random_state=seed)
    prompts, reference = discovery_prompts(sample, discovery, neutral, template)
    acts, ref = (last_token_activations(model, p, layers) for p in (prompts, reference))
    scores = {L: scores_from_activations(acts[L], ref[L], method) for L in layers}
    return {L: v.abs() for L, v in scores.items()} if discovery == "contrast" else scores


def sst2_neurons(model, layer: int, k: int, n_train: int = 256, seed: int = 0,
                 neutral: Sequence[str] | None = None, template: str = SST2_TEMPLATE,
                 data_dir: str | os.PathLike | None = None, method: str = "mean_diff",
                 discovery: str = "neutral") -> tuple[list[int], torch.Tensor]:
    """Top-k neurons of ``layer`` for SST-2 (train sentences only) and the scores ``[d_mlp]``."""
    check_layer(model, layer)
    check_k(model, k)
    scores = sst2_scores(model, [layer], n_train, seed, discovery, neutral, template, data_dir, method)[layer]
    return rank_neurons(scores)[:k].tolist(), scores


def discovery_overlap(model, layer: int, k: int, n_train: int = 256, seed: int = 0,
                      data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Jaccard overlap of the top-k neurons of ``layer`` chosen by each discovery mode (square DataFrame)."""
    check_k(model, k)
    return neuron_overlap({mode: sst2_neurons(model, layer, k, n_train, seed, data_dir=data_dir, discovery=mode)[0]
                           for mode in DISCOVERY_MODES})


def run_sst2(model, layer: int, k: int, multiplier: float, positions: Positions = "all", n_train: int = 256,
             seed: int = 0, data_dir: str | os.PathLike | None = None, template: str = SST2_TEMPLATE,
             label_words: Sequence[str] = SST2_LABEL_WORDS, limit: int | None = None) -> pd.DataFrame:
    """The SST-2 study: every validation example before SNA, after SNA, and with random control neurons."""
    check_layer(model, layer)
    check_k(model, k)
    check_multiplier(multiplier)
    check_sst2_setup(model, template, label_words)
    val = load_sst2("validation", data_dir)
    val = val.iloc[:limit] if limit else val
    neurons, _ = sst2_neurons(model, layer, k, n_train, seed, template=template, data_dir=data_dir)
    control = random_neurons(d_mlp(model), k, seed, layer)
    runs = {"base": None, "sna": Intervention(layer, neurons, multiplier, positions),
            "control": Intervention(layer, control, multiplier, positions)}
    out = val.copy()
    for name, iv in runs.items():
        scored = score_sst2(model, val, iv, template, label_words)
        out[[f"{c}_{name}" for c in scored.columns]] = scored.to_numpy()
    out["zone"] = [zone_of(p) for p in out["p_correct_base"]]
    out["confidence_2way"] = (out["p2_positive_base"] - 0.5).abs()
    out = out.assign(model=model_name(model), layer=layer, k=k, multiplier=multiplier, positions=positions,
                     neurons=",".join(map(str, neurons)))
    for col in ("correct_base", "correct_sna", "correct_control"):
        out[col] = out[col].astype(bool)
    return out


def run_sst2_grid(model, layers: Sequence[int], ks: Sequence[int], multipliers: Sequence[float],
                  discovery: str = "neutral", positions: Positions = "all", n_train: int = 256, seed: int = 0,
                  data_dir: str | os.PathLike | None = None, template: str = SST2_TEMPLATE,
                  label_words: Sequence[str] = SST2_LABEL_WORDS, limit: int | None = None,
                  batch_size: int = 32, engine: bool = True) -> pd.DataFrame:
    """SST-2 over a small grid: one row per (arm 'sna'/'control', layer, k, multiplier, validation example)
    with the label words' full-vocabulary probabilities after (``p_negative``, ``p_positive``) and before
    (``*_base``), the example's ``part`` ('selection'/'test') and its label. Neurons from train sentences only.
    ``engine``: every configuration of a layer through the sweep engine (the same numbers, ``tests/test_sst2.py``);
    False: one plain hooked forward pass per configuration."""
    layers = [check_layer(model, L) for L in layers]
    for k in ks:
        check_k(model, k)
    for m in multipliers:
        check_multiplier(m)
    check_positions(positions)
    if not (layers and len(ks) and len(multipliers)):
        raise SNAError("Give at least one layer, one k and one multiplier for the SST-2 grid.")
    check_discovery(discovery)
    ids = check_sst2_setup(model, template, label_words)
    val = load_sst2("validation", data_dir)
    val = (val.iloc[:limit] if limit else val).assign(part=lambda d: sst2_split(d, seed))
    scores = sst2_scores(model, layers, n_train, seed, discovery, template=template, data_dir=data_dir)
    base = label_probs(model, val["sentence"], ids, None, template, batch_size)
    common = dict(example=val.index.to_numpy(), label=val["label"].to_numpy(), part=val["part"].to_numpy(),
                  p_negative_base=base[:, 0], p_positive_base=base[:, 1])
    frames = []
    batch = encode_prompts(model, sst2_prompts(val["sentence"], template)) if engine else None
    for L in layers:
        ranked = rank_neurons(scores[L]).tolist()
        grid = [(arm, k, neurons, float(m)) for k in ks
                for arm, neurons in (("sna", ranked[:k]), ("control", random_neurons(d_mlp(model), k, seed, L)))
                for m in multipliers]
        configs = [Config(tuple(map(int, neurons)), m) for _, _, neurons, m in grid]
        probs = engine_token_probs(model, layer_state(model, batch, L), L, configs, ids, positions) if engine else None
        for i, (arm, k, neurons, m) in enumerate(grid):
            p = (probs[i].numpy() if engine else
                 label_probs(model, val["sentence"], ids, Intervention(L, neurons, m, positions), template, batch_size))
            frames.append(pd.DataFrame(dict(arm=arm, layer=L, k=k, multiplier=m, **common, p_negative=p[:, 0],
                                            p_positive=p[:, 1], neurons=",".join(map(str, neurons)))))
    return pd.concat(frames, ignore_index=True).assign(model=model_name(model), positions=positions,
                                                       discovery=discovery, seed=seed)


def sst2_zone_report(examples: pd.DataFrame, confidence_bins: Sequence[float] = (0.1, 0.3),
                     by_label: bool = False) -> pd.DataFrame:
    """Per zone of the baseline p (and per 2-way-confidence band; per true label with ``by_label``): group size,
    accuracy and mean p (%) of every arm present (base, sna, control, bias), changes in pp, the room left
    (``max_gain_pp``, 100 minus the baseline accuracy), and SNA's mean
    shift of the 2-way log-odds toward " positive" (nats; a uniform shift shows as one sign in every group)."""
    df = examples.copy()
    lo, hi = confidence_bins
    df["band"] = np.where(df["confidence_2way"] < lo, f"uncertain (|q-0.5| < {lo})",
                          np.where(df["confidence_2way"] < hi, f"moderate ({lo} <= |q-0.5| < {hi})",
                                   f"confident (|q-0.5| >= {hi})"))
    views = [("METHOD zone", df["zone"].map(ZONE_NAMES)), ("2-way confidence", df["band"]),
             ("all", pd.Series("all examples", index=df.index))]
    arms = [a for a in ARMS if f"correct_{a}" in df]
    rows = []
    for view, groups in views:
        keys = [groups, df["label"]] if by_label else [groups]
        for key, sub in df.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            row = dict(view=view, group=key[0], **({"label": int(key[1])} if by_label else {}), n=len(sub))
            for run in arms:
                row[f"accuracy_{run}"] = 100 * sub[f"correct_{run}"].mean()
                row[f"p_{run}"] = 100 * sub[f"p_correct_{run}"].mean()
            row["accuracy_change_pp"] = row["accuracy_sna"] - row["accuracy_base"]
            row["max_gain_pp"] = 100 - row["accuracy_base"]  # the most any intervention can add to this group
            row["p_change_pp"] = row["p_sna"] - row["p_base"]
            for run in (a for a in arms if a not in ("base", "sna")):
                row[f"{run}_accuracy_change_pp"] = row[f"accuracy_{run}"] - row["accuracy_base"]
                row[f"{run}_p_change_pp"] = row[f"p_{run}"] - row["p_base"]
            if "p2_positive_sna" in sub and "p2_positive_base" in sub:
                row["shift_to_positive_nats"] = float((log_odds(sub["p2_positive_sna"]) -
                                                       log_odds(sub["p2_positive_base"])).mean())
            rows.append(row)
    return pd.DataFrame(rows)

