"""The external check on GLUE SST-2: sentiment as a next-token task, scored per example and per zone.

Loads SST-2 (strict TSV reader or the Hub), finds sentiment neurons on train sentences, scores every
validation example before SNA, after it and with control neurons, and reports by METHOD's zones of
the baseline probability and by 2-way confidence bands. Imports ``core`` and ``hub``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .core import (ZONE_NAMES, Intervention, Positions, check_k, check_layer, check_multiplier, d_mlp, load_neutral,
                   model_name, neuron_scores, next_token_logits, random_neurons, split_neutral, target_token_ids,
                   top_neurons, zone_of)
from .errors import SNAError
from .hub import require_hub


SST2_TEMPLATE = "Review: {sentence}\nSentiment:"


SST2_LABEL_WORDS = (" negative", " positive")  # label 0, label 1


SST2_HUB_ID = "nyu-mll/glue"


SST2_FILES = {"validation": "dev.tsv", "train": "train.tsv"}


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
    logits = next_token_logits(model, sst2_prompts(data["sentence"], template), intervention, batch_size)
    probs = logits.double().softmax(-1)[:, ids]  # [n, 2]: P(negative), P(positive)
    labels = torch.tensor(data["label"].to_numpy())
    p_correct = probs[torch.arange(len(labels)), labels]
    pred = (probs[:, 1] > probs[:, 0]).long()
    return pd.DataFrame({"p_correct": p_correct.numpy(), "p2_positive": (probs[:, 1] / probs.sum(-1)).numpy(),
                         "pred": pred.numpy(), "correct": (pred == labels).numpy()}, index=data.index)


def sst2_neurons(model, layer: int, k: int, n_train: int = 256, seed: int = 0,
                 neutral: Sequence[str] | None = None, template: str = SST2_TEMPLATE,
                 data_dir: str | os.PathLike | None = None, method: str = "mean_diff") -> tuple[list[int], torch.Tensor]:
    """Top-k neurons of ``layer`` for SST-2: a fixed-seed sample of train prompts against neutral prose."""
    check_layer(model, layer)
    check_k(model, k)
    train = load_sst2("train", data_dir)
    sample = train.sample(n=min(n_train, len(train)), random_state=seed)
    neutral = list(neutral) if neutral is not None else list(split_neutral(load_neutral(), seed).discovery)
    scores = neuron_scores(model, sst2_prompts(sample["sentence"], template), neutral, layer, method)
    return top_neurons(scores, k), scores


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


def sst2_zone_report(examples: pd.DataFrame, confidence_bins: Sequence[float] = (0.1, 0.3)) -> pd.DataFrame:
    """Per zone of the baseline p (and per 2-way-confidence band): accuracy and mean p before/after, in pp."""
    df = examples.copy()
    lo, hi = confidence_bins
    df["band"] = np.where(df["confidence_2way"] < lo, f"uncertain (|q-0.5| < {lo})",
                          np.where(df["confidence_2way"] < hi, f"moderate ({lo} <= |q-0.5| < {hi})",
                                   f"confident (|q-0.5| >= {hi})"))
    views = [("METHOD zone", df["zone"].map(ZONE_NAMES)), ("2-way confidence", df["band"]),
             ("all", pd.Series("all examples", index=df.index))]
    rows = []
    for view, groups in views:
        for group, sub in df.groupby(groups, sort=True):
            row = dict(view=view, group=group, n=len(sub))
            for run in ("base", "sna", "control"):
                row[f"accuracy_{run}"] = 100 * sub[f"correct_{run}"].mean()
                row[f"p_{run}"] = 100 * sub[f"p_correct_{run}"].mean()
            row["accuracy_change_pp"] = row["accuracy_sna"] - row["accuracy_base"]
            row["p_change_pp"] = row["p_sna"] - row["p_base"]
            row["control_accuracy_change_pp"] = row["accuracy_control"] - row["accuracy_base"]
            row["control_p_change_pp"] = row["p_control"] - row["p_base"]
            rows.append(row)
    return pd.DataFrame(rows)
