"""The reproduction report: every section from saved results, self-contained in a real browser (no request leaves
the page), the banner on random weights, and the provenance it shows (data hashes, the run's git commit)."""
from __future__ import annotations

import asyncio
from markupsafe import escape
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

import sna_utils as su
from helpers import CHROMIUM_FLAGS, find_chromium, stop_process_group, trim
from sna_utils.run.provenance import collect_provenance, now_utc
from sna_utils.show.report import SECTIONS, random_models

EXTRA_CLAIM = "a claim no rule of this kit version knows (a baseline of another branch)"


@pytest.fixture(scope="module")
def saved_run(tiny, tasks, neutral, tmp_path_factory):
    """A smoke-like results folder made quickly: a small sweep of the tiny stand-in, its verdict (plus one row of
    an unknown claim), one figure and the provenance record; then the report built from it."""
    root = tmp_path_factory.mktemp("report")
    results, figures = su.results_dir("smoke", root / "results"), su.figures_dir("smoke", root / "figures")
    started = now_utc()
    t, neu = trim(tasks, neutral, n_tasks=3, n_eval=12)
    out = results / su.sweep_table_name("tiny")
    sweep = su.run_sweep(tiny, t, [2], [1, 5], [2.0, 5.0], neutral=neu, out=out, progress=False)
    verdict = su.verdict(sweep, su.read_prompt_table(out), "smoke")
    extra = dict(verdict.iloc[-1]) | dict(claim=EXTRA_CLAIM, paper=12.5, verdict="supported")
    verdict = pd.concat([verdict, pd.DataFrame([extra])], ignore_index=True)
    su.round_for_reading(verdict).to_csv(results / "verdict.csv", index=False)
    su.save_figure(su.plot_sna_vs_control(sweep), "01_sna_vs_control", figures, note=su.model_note("tiny", "smoke"))
    su.write_provenance(collect_provenance("smoke", started, now_utc(), results), results)
    report = su.build_report("smoke", root / "results", root / "figures", out_dir=root / "runs" / "smoke")
    return root, verdict, report


def test_report_shows_every_section_and_every_verdict_row(saved_run):
    root, verdict, report = saved_run
    page = report.html.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    for claim in verdict["claim"]:  # rows read generically, an unknown claim's too
        assert str(escape(claim)) in page and claim.replace("|", "\\|") in report.markdown.read_text()
    assert EXTRA_CLAIM in page and ">12.5<" in page  # the paper's number beside the claim
    assert 'id="random-weights"' in page and "RANDOM WEIGHTS" in report.markdown.read_text()
    assert report.random_models == ("tiny",)
    assert page.count('src="data:image/png;base64,') == 1 and "01_sna_vs_control.png" in page
    assert "default-src 'none'" in page and "http://" not in page.replace("http://www.w3.org", "")
    head = report.markdown.read_text()
    assert "## Provenance" in head and "data/tasks/addition.json" in head and "addition" in head


def test_banner_follows_the_models_not_the_profile():
    trained = pd.DataFrame(dict(model=["gpt2-small"], revision=[su.PINNED_REVISIONS["openai-community/gpt2"]]))
    assert random_models(trained) == ()
    assert random_models(trained, pd.DataFrame(dict(model=["tiny-qwen2"]))) == ("tiny-qwen2",)
    renamed = pd.DataFrame(dict(model=["my-folder-model"], revision=["random weights, seed 3"]))
    assert random_models(renamed) == ("my-folder-model",)


def test_nothing_saved_is_refused_naming_the_folder(tmp_path):
    with pytest.raises(su.SNAError, match="Nothing to report for profile 'smoke'.*no verdict.csv"):
        su.build_report("smoke", tmp_path / "results", tmp_path / "figures", out_dir=tmp_path / "runs")
    assert not (tmp_path / "runs" / "report.html").exists()


def test_provenance_records_the_run(saved_run):
    root, _, _ = saved_run
    record = su.read_provenance(root / "results" / "smoke")
    head = subprocess.run(["git", "-C", str(su.KIT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["git"]["commit"] == (head.stdout.strip() or None) and isinstance(record["git"]["dirty"], bool)
    import hashlib
    import os

    import torch
    import transformers

    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["transformers"] == transformers.__version__
    assert record["versions"]["transformer-lens"] != "not installed"
    assert record["profile"] == "smoke" and record["kit_version"] == su.KIT_VERSION
    assert record["started"] <= record["ended"] and record["pinned_revisions"] == su.PINNED_REVISIONS
    hashes = record["data_sha256"]
    assert len([k for k in hashes if k.startswith("data/tasks/")]) == 12
    for name in ("data/neutral.txt", "data/neutral_formats.json", "data/tasks/addition.json"):
        assert hashes[name] == hashlib.sha256((su.KIT_ROOT / name).read_bytes()).hexdigest()
    if os.environ.get("SNA_SST2_DIR"):
        assert str(Path(os.environ["SNA_SST2_DIR"]).resolve() / "dev.tsv") in hashes
    (table,) = record["tables"]
    assert table["model"] == "tiny" and table["revision"] == "random weights, seed 0"
    assert table["precision"] == "float32" and table["seed"] == "0"


# --- the report in a real browser ---------------------------------------------------------------------------------

PAGE_CHECK = """JSON.stringify({sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
  text: document.body.innerText, banner: !!document.getElementById('random-weights'),
  images: [...document.images].map(i => ({alt: i.alt, drawn: i.complete && i.naturalWidth > 0}))})"""


async def _visit(devtools_port: int, urls: list[str], timeout: float = 60) -> list[tuple[dict, list[str], list[str]]]:
    """Open each url in turn; for each: (page state, the URLs it requested, the console/security messages)."""
    from tornado.websocket import websocket_connect

    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=10))
    ws = await websocket_connect(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"],
                                 max_message_size=256 << 20)
    counter, events = iter(range(1, 1 << 30)), []

    async def call(method: str, **params) -> dict:
        i = next(counter)
        await ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 30))
            if msg.get("id") == i:
                return msg.get("result", {})
            events.append(msg)

    try:
        for domain in ("Network", "Log", "Runtime", "Page"):
            await call(f"{domain}.enable")
        seen = []
        for url in urls:
            events.clear()
            await call("Page.navigate", url=url)
            deadline = time.time() + timeout
            while (await call("Runtime.evaluate", expression="document.readyState", returnByValue=True)
                   )["result"]["value"] != "complete" and time.time() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # late requests, if any
            state = json.loads((await call("Runtime.evaluate", expression=PAGE_CHECK, returnByValue=True))
                               ["result"]["value"])
            requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
            logs = [e["params"]["entry"]["text"] for e in events if e.get("method") == "Log.entryAdded"]
            logs += [" ".join(str(a.get("value", "")) for a in e["params"]["args"]) for e in events
                     if e.get("method") == "Runtime.consoleAPICalled"]
            seen.append((state, requests, logs))
        return seen
    finally:
        ws.close()


def render_in_chromium(pages: list[Path], tmp_path: Path) -> list[tuple[dict, list[str], list[str]]]:
    """Open each local HTML file in headless Chromium (skips where there is none); see :func:`_visit`."""
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium); the browser check needs one")
    profile = tmp_path / "chromium-profile"
    chrome = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert chrome.poll() is None and time.time() < deadline, "Chromium did not start its DevTools port"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(asyncio.wait_for(_visit(port, [p.resolve().as_uri() for p in pages]), 240))
    finally:
        stop_process_group(chrome)


def leaks(requests: list[str], logs: list[str]) -> list[str]:
    """What a page tried to fetch beyond itself: requests other than file: and data:, and blocked attempts."""
    return [u for u in requests if not u.startswith(("file:", "data:"))] + \
        [m for m in logs if "Content Security Policy" in m or "ERR_" in m]


def check_report_in_browser(page: Path, tmp_path: Path) -> dict:
    """Render ``page`` and a copy with one remote image added: the report is whole and leaks nothing, while the
    copy's remote image is caught (so the check can fail). Returns the report's page state."""
    leaky = tmp_path / "leaky.html"
    leaky.write_text(page.read_text().replace("</body>", '<img src="http://127.0.0.1:9/x.png" alt="remote"></body>'))
    (state, requests, logs), (_, leaky_requests, leaky_logs) = render_in_chromium([page, leaky], tmp_path)
    assert state["sections"] == list(SECTIONS), state["sections"]
    assert state["images"] and all(i["drawn"] for i in state["images"]), state["images"]
    assert not leaks(requests, logs), leaks(requests, logs)
    assert leaks(leaky_requests, leaky_logs), "the leak check missed a remote image"
    return state


def test_report_renders_in_headless_chromium_without_requests(saved_run, tmp_path):
    _, verdict, report = saved_run
    state = check_report_in_browser(report.html, tmp_path)
    assert state["banner"] and "RANDOM WEIGHTS" in state["text"]
    assert all(claim in state["text"] for claim in verdict["claim"])
