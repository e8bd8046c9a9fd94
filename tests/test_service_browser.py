"""The web page in a real browser: stream a dialogue, read an explanation, correct a label, forget the dialogue.

Also for a multilabel and a regression model: emotions present with their probabilities,
or a score on its scale, corrected with checkboxes or a number.

Needs the ``playwright`` Python package and a Chromium binary (Debian's ``chromium``);
skipped when either is missing. The page may load nothing from anywhere but the service.
"""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest

from joyful import Joyful
from joyful.corrections import CorrectionStore
from joyful.data.label_forms import MOSEI_EMOTIONS
from joyful.service.app import create_app
from service_fixtures import dialogue_body, live_server, sample_dialogue, served_model_dir, utterance_body  # noqa: F401
from test_tasks_service import sample, task_model_dirs  # noqa: F401 - task_model_dirs is a fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def site(served_model_dir, tmp_path):
    store = tmp_path / "store.sqlite"
    with live_server(create_app(Joyful.load(served_model_dir), store)) as url:
        yield url, store


@contextlib.contextmanager
def watched_page(browser, url, ready: str):
    """The service's page, open once ``ready`` shows in the model line; fails the test on any page error."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # A refused POST is logged by Chromium as a failed load; the page shows those itself (tested below),
    # so failed loads count only for GETs: the page, its assets and /model.
    page.on("console", lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: problems.append(f"{r.status} for GET {r.url}")
            if r.request.method == "GET" and r.status >= 400 else None)
    page.on("request", lambda r: None if r.url.startswith(url) else problems.append(f"request elsewhere: {r.url}"))
    page.goto(url)
    page.wait_for_selector(f"#model-info:has-text('{ready}')")
    yield page
    page.close()
    assert problems == []


@pytest.fixture
def page(browser, site):
    with watched_page(browser, site[0], "labels:") as p:
        yield p


@pytest.fixture(params=["multilabel", "regression"])
def task_page(request, browser, task_model_dirs, tmp_path):  # noqa: F811
    """The page of a multilabel or a regression model: (task, page, store path)."""
    store = tmp_path / "store.sqlite"
    with live_server(create_app(Joyful.load(task_model_dirs[request.param]), store)) as url:
        with watched_page(browser, url, request.param) as p:
            yield request.param, p, store


def features_json(d, i) -> str:
    u = utterance_body(d, i, text=False)
    return json.dumps({k: v for k, v in u.items() if k != "speaker"})


def test_stream_explain_correct_and_forget(page, site):
    _, store = site
    d = sample_dialogue(seed=11, n=4)
    page.select_option("#consent", "store")
    page.fill("#session-dialogue", "browser-call")
    page.click("#session-start")
    with CorrectionStore(store) as db:
        stored_as = db.dialogue_key("browser-call")  # the page shows the id the store knows, never the name given
    page.wait_for_selector(f"#status:has-text('session started for dialogue {stored_as} (consent: store)')")
    page.click("summary")  # opens the feature-vector field
    for i in range(len(d)):
        page.fill("#speaker", d.speakers[i])
        page.fill("#text", f"words number {i}")
        page.fill("#features", features_json(d, i))
        page.click("#add")
        page.locator(f"#timeline .utterance[data-index='{i}']").wait_for()
    items = page.locator("#timeline .utterance")
    assert items.count() == len(d)
    labels = [items.nth(k).get_attribute("data-label") for k in range(len(d))]
    with CorrectionStore(store) as db:
        assert len(db.dialogue("browser-call")) == len(d)
    assert items.nth(3).locator(".said").inner_text() == "words number 3"
    assert items.nth(3).locator(".bars .name").count() == 6  # a bar per label

    items.nth(2).click()
    panel = page.locator("#explanation")
    panel.locator("h2:has-text('Explanation: #2')").wait_for()
    assert {"text", "audio", "visual"} <= set(panel.locator(".bars .name").all_inner_texts())
    assert panel.locator("#context-table tr").count() == 1 + 2  # header + the two earlier utterances

    new_label = next(lab for lab in ("hap", "sad", "neu") if lab != labels[1])
    page.fill("#annotator", "browser-tester")
    items.nth(1).locator("select.correct-label").select_option(new_label)
    items.nth(1).locator("button.correct-button").click()
    page.wait_for_selector(f"#status:has-text('utterance 1 corrected to {new_label}')")
    assert items.nth(1).get_attribute("data-label") == new_label
    with CorrectionStore(store) as db:
        (c,) = db.corrections("browser-call")
        assert (c.index, c.label, c.annotator) == (1, new_label, "browser-tester")

    page.click("#forget")
    page.wait_for_selector(f"#status:has-text('forgot dialogue {stored_as}')")
    assert page.locator("#timeline .utterance").count() == 0
    with CorrectionStore(store) as db:
        assert db.dialogue("browser-call") is None and db.corrections() == []


def test_paste_a_dialogue_and_see_errors(page):
    d = sample_dialogue(seed=12, n=5)
    page.click("#tab-dialogue")
    page.fill("#dialogue-json", json.dumps(dialogue_body(d)))
    page.click("#predict")
    page.locator("#timeline .utterance[data-index='4']").wait_for()
    assert page.locator("#timeline .utterance").count() == 5
    assert page.locator("#dialogue-title").inner_text() == f"Dialogue {d.id}"
    page.locator("#timeline .utterance").nth(4).click()
    page.locator("#explanation h2:has-text('Explanation: #4')").wait_for()

    bad = dialogue_body(d)
    bad["utterances"][3]["audio"] = [1.0]
    page.fill("#dialogue-json", json.dumps(bad))
    page.click("#predict")
    page.wait_for_selector("#status.error:has-text('422')")
    assert "utterance 3" in page.inner_text("#status") and "'audio'" in page.inner_text("#status")


def test_emotions_or_a_score_are_shown_and_corrected_in_their_form(task_page):
    task, page, store = task_page
    d = sample(task, seed=13, n=4)
    page.select_option("#consent", "store")
    page.click("#tab-dialogue")
    page.fill("#dialogue-json", json.dumps(dialogue_body(d, text=False)))
    page.click("#predict")
    page.locator("#timeline .utterance[data-index='3']").wait_for()
    items = page.locator("#timeline .utterance")
    first = items.nth(1)
    if task == "multilabel":
        assert first.locator(".bars .name").all_inner_texts() == list(MOSEI_EMOTIONS)  # a probability per emotion
        present = [e for e in first.get_attribute("data-label").split(",") if e]
        assert first.locator(".bars .name.on").all_inner_texts() == present
        assert first.locator(".chip").inner_text() == (" + ".join(present) or "none")
        first.locator("input.correct-emotion[value='fear']").set_checked("fear" not in present)
        first.locator("button.correct-button").click()
        wanted = tuple(e for e in MOSEI_EMOTIONS if (e in present) != (e == "fear"))
        page.wait_for_selector(f"#status:has-text('utterance 1 corrected to {' + '.join(wanted) or 'none'}')")
        assert first.get_attribute("data-label") == ",".join(wanted)
    else:
        score = float(first.get_attribute("data-label"))
        assert first.locator(".score .value").inner_text() == f"{score:.2f}" and -3 <= score <= 3
        first.locator("input.correct-score").fill("-1.5")
        first.locator("button.correct-button").click()
        page.wait_for_selector("#status:has-text('utterance 1 corrected to -1.50')")
        wanted = -1.5
        first.locator("input.correct-score").fill("7")
        first.locator("button.correct-button").click()
        page.wait_for_selector("#status.error:has-text('422')")
        assert "[-3, 3]" in page.inner_text("#status")
    with CorrectionStore(store) as db:
        assert [(c.index, c.label) for c in db.corrections(d.id)] == [(1, wanted)]

    items.nth(2).click()
    panel = page.locator("#explanation")
    panel.locator("h2:has-text('Explanation: #2')").wait_for()
    assert ("Change in the score" if task == "regression" else "confidence in this decision") in panel.inner_text()
    assert set(panel.locator(".bars .name").all_inner_texts()) == {"audio", "visual"}


def test_review_queue_is_corrected_on_the_page_and_drift_is_shown(browser, served_model_dir, tmp_path):
    """Every prediction is uncertain under P = 1: the queue lists them; correcting one there takes it out."""
    store = tmp_path / "store.sqlite"
    with live_server(create_app(Joyful.load(served_model_dir), store, abstain_below=1.0)) as url:
        with watched_page(browser, url, "labels:") as page:
            d = sample_dialogue(seed=14, n=3)
            page.select_option("#consent", "store")
            page.click("#tab-dialogue")
            page.fill("#dialogue-json", json.dumps(dialogue_body(d)))
            page.click("#predict")
            page.locator("#review .utterance[data-index='2']").wait_for()
            assert page.locator("#review .utterance").count() == 3
            assert "uncertain" in page.locator("#timeline .utterance").nth(0).locator(".confidence").inner_text()
            page.locator("#review .utterance[data-index='1'] select.correct-label").select_option("sad")
            page.locator("#review .utterance[data-index='1'] button.correct-button").click()
            page.wait_for_selector("#review-info:has-text('2 uncertain predictions')")
            assert page.locator("#review .utterance[data-index='1']").count() == 0
            with CorrectionStore(store) as db:
                assert [(c.dialogue, c.index, c.label) for c in db.corrections()] == [(db.dialogue_key(d.id), 1, "sad")]
            page.click("#monitor-refresh")
            page.wait_for_selector("#monitor-table tr[data-statistic='labels']")
            assert "alerts need at least" in page.inner_text("#monitor-info")  # 3 predictions: too few to alert
