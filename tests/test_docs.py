"""docs/method.md stays true: every number, setting and name it quotes matches the code, and the README and
every notebook link to it."""
import inspect
import re
from pathlib import Path

import nbformat

import sna_utils as su
from sna_utils.run.profiles import PROFILES

KIT_ROOT = Path(__file__).resolve().parent.parent
DOC = (KIT_ROOT / "docs" / "method.md").read_text(encoding="utf-8")
FLAT = re.sub(r"\s+", " ", DOC)  # line breaks and indentation as single spaces


def _set(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def _default(func, name):
    return inspect.signature(func).parameters[name].default


def _row(first_cell: str) -> str:
    """The markdown table row of ``DOC`` whose first cell is ``first_cell``."""
    rows = [line for line in DOC.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, f"no single table row for {first_cell!r}"
    return rows[0]


def test_zone_bounds():
    lo, hi = su.ZONE_LOW, su.ZONE_HIGH
    for text in (f"`P_base < {lo:g}`", f"`{lo:g} <= P_base <= {hi:g}`", f"`P_base > {hi:g}`"):
        assert text in DOC, text
    assert (su.zone_of(lo - 1e-9), su.zone_of(lo), su.zone_of(hi), su.zone_of(hi + 1e-9)) == (1, 2, 2, 3)


def test_paper_grid():
    layers = su.n_layers_of("gpt2-small") + su.n_layers_of("gpt2-medium")
    n_tasks = len(su.load_tasks())
    total = layers * len(su.PAPER_KS) * len(su.PAPER_MULTIPLIERS) * n_tasks
    assert total == su.PAPER_NUMBERS["configurations"]
    assert f"k in {_set(su.PAPER_KS)} x m in {_set(su.PAPER_MULTIPLIERS)}" in FLAT
    assert f"{layers} x {len(su.PAPER_KS)} x {len(su.PAPER_MULTIPLIERS)} x {n_tasks} = {total:,}" in FLAT
    paper = PROFILES["paper"]
    assert paper.layers is None and paper.ks == su.PAPER_KS and paper.multipliers == su.PAPER_MULTIPLIERS


def test_paper_numbers():
    p = su.PAPER_NUMBERS
    for key in ("spearman_rho", "spearman_p", "zone1_mean_improvement_pct", "zone1_best_improvement_pct",
                "sst2_uncertain_change_pp", "pythia_zone1_mean_improvement_pct"):
        assert f"{p[key]:g}" in DOC, key
    assert f"rarely more than {p['zone3_rarely_above_pct']:g} %" in DOC
    layers = ", ".join(f"{cat.replace('_', ' ')} {layer}" for cat, layer in su.PAPER_BEST_LAYERS.items())
    assert f"| best layers | {layers} |" in DOC


def test_sst2_setup():
    template = su.SST2_TEMPLATE.replace("\n", "\\n")
    assert f"prompt: `{template}`" in DOC
    negative, positive = su.SST2_LABEL_WORDS
    assert f'`"{negative}"` (label 0) and `"{positive}"` (label 1)' in DOC
    lo, hi = _default(su.sst2_zone_report, "confidence_bins")
    assert f"uncertain below {lo:g}, moderate from {lo:g} to below {hi:g}, confident from {hi:g}" in FLAT
    paper = PROFILES["paper"]
    assert f"{paper.sst2_n_train} training sentences" in DOC
    assert (f"layer {paper.sst2_layer} of GPT-2 Medium in the `paper` profile; k = {paper.sst2_k} and "
            f"m = {paper.sst2_multiplier:g}") in FLAT.replace("  ", " ")
    assert len(su.load_sst2("validation")) == 872 and "872 sentences" in DOC


def test_golden_zone_thresholds():
    for func in (su.golden_zone, su.golden_zone_summary, su.plot_golden_zone):
        assert f"`improvement_pct >= {_default(func, 'min_improvement_pct'):g}` %" in DOC
        assert f"`side_effect_kl <= {_default(func, 'max_kl'):g}` nats" in DOC


def test_tasks_and_neutral_prompts():
    tasks = su.load_tasks()
    categories = sorted({t.category for t in tasks})
    least = int(re.search(r"each with at least (\d+) items", DOC).group(1))
    assert f"{len(tasks)} tasks in {len(categories)} categories" in DOC
    assert min(len(t.items) for t in tasks) >= least
    for cat in categories:
        assert set(re.findall(r"`(\w+)`", _row(cat))) == {t.name for t in tasks if t.category == cat}, cat
    assert f"{len(su.load_neutral())} lines of everyday prose" in FLAT
    assert set(su.SCORE_METHODS) <= set(re.findall(r"`(\w+)`", DOC))


def test_profiles_table():
    for name, prof in PROFILES.items():
        row = _row(f"`{name}`")
        assert f"`{prof.sst2_model}` layer {prof.sst2_layer}, k = {prof.sst2_k}, m = {prof.sst2_multiplier:g}, " \
               f"{prof.sst2_n_train} train sentences" in row, name
        for model in (*prof.sweep_models, prof.pythia_model, prof.beyond_model):
            assert not model or f"`{model}`" in row, (name, model)  # no Pythia-place model: notebook 05 skipped
        for notebook, _ in prof.skipped:
            assert f"notebook {notebook[:2]} left out" in row, (name, notebook)
        if name != "paper":
            layers = "all layers" if prof.layers is None else f"layers {_set(prof.layers)}"
            assert f"{layers} x k in {_set(prof.ks)} x m in {_set(prof.multipliers)}" in row, name
    validation = {(p.validation_ks, p.validation_multipliers) for n, p in PROFILES.items() if n != "smoke"}
    assert len(validation) == 1
    ks, ms = validation.pop()
    assert f"k in {_set(ks)} x m in {_set(ms)} in `quick` and `paper`" in FLAT


def test_every_name_it_quotes_exists(sweep):
    """A bare name in backticks is a function or constant of sna_utils, a results column, a task, a category,
    a model, a profile or a parameter: renaming one without the note fails here."""
    tasks = su.load_tasks()
    params = {p for f in (su.run_sweep, su.run_sst2, su.load_model) for p in inspect.signature(f).parameters}
    known = (set(dir(su)) | set(sweep.columns) | {t.name for t in tasks} | {t.category for t in tasks}
             | set(su.MODEL_NAMES) | set(su.core.HUB_ALIASES) | set(PROFILES) | set(su.SCORE_METHODS)
             | {"all", "last"} | params)
    quoted = set(re.findall(r"`([A-Za-z_][\w:.-]*)`", DOC))
    unknown = sorted(q for q in quoted if q not in known and not q.startswith(("sna_utils", "SNA_")))
    assert unknown == []
    readme = (KIT_ROOT / "README.md").read_text(encoding="utf-8")
    assert [v for v in quoted if v.startswith("SNA_") and v not in readme] == []  # settings the README explains
    for path in re.findall(r"`((?:sna_utils|data|tests)/[\w./<>-]+)`", DOC):
        if "<" not in path:
            assert (KIT_ROOT / path).exists(), path


def test_readme_and_every_notebook_link_the_note():
    assert "(docs/method.md)" in (KIT_ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted((KIT_ROOT / "notebooks").glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        opening = next(c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(f"# {path.stem[:2]} "))
        assert "(../docs/method.md)" in opening.source, path.name
        assert "METHOD.md" not in "\n".join(c.source for c in nb.cells), path.name


def test_the_readme_is_a_front_door():
    """At most 15 KB; the two commands and the verdict first; every reference page under docs/ linked and there."""
    readme = (KIT_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 15_000, f"README.md is {len(readme.encode())} bytes: move reference to docs/"
    assert readme.index("make run") < readme.index("make test") < readme.index("## What you get at the end")
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme))
    pages = {f"docs/{p.name}" for p in (KIT_ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"
    for page in pages:  # relative links inside the pages point at files that exist
        text = (KIT_ROOT / page).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([\w./-]+\.(?:md|py))(?:#[\w-]+)?\)", text):
            assert (KIT_ROOT / "docs" / target).resolve().exists(), f"{page} links to missing {target}"


def test_the_layout_page_lists_every_module():
    layout = (KIT_ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    for path in sorted((KIT_ROOT / "sna_utils").rglob("*.py")):
        rel = path.relative_to(KIT_ROOT).as_posix()
        if path.name != "__init__.py":
            assert f"`{rel}`" in layout, f"docs/layout.md does not list {rel}"
