"""The page in a real browser: Playwright drives Debian's Chromium against a live uvicorn
server on a free loopback port; upload a file, read the prediction, click the gallery."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright not installed: pip install playwright")

from fmnist.inference import Predictor  # noqa: E402
from fmnist.serve import create_app  # noqa: E402
from fmnist.training import train  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]
TINY = dict(model="baseline-small", optimizer="adam", lr=3e-3, epochs=1, batch_size=100,
            train_limit=1000, test_limit=100, augment=[], precision="fp32")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and shutil.which("chromium") is None,
    reason="Chromium not installed (apt-get install -y chromium); Playwright's own browser "
    "download is not used here",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, learnable_dataset) -> Path:
    out = tmp_path_factory.mktemp("serve-browser") / "run"
    train(data=learnable_dataset, out=out, **TINY)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir: Path) -> Iterator[str]:
    """uvicorn serving the app in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(run_dir, device="cpu"), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    exe = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        yield b
        b.close()


def confident_training_image(run_dir: Path, dataset) -> tuple[np.ndarray, str]:
    """A training image the model gets right with the highest confidence."""
    images, labels = dataset.train.images[:200], dataset.train.labels[:200]
    probs = Predictor.from_path(run_dir, device="cpu").predict_proba(images)
    right = np.flatnonzero(probs.argmax(1) == labels)
    assert len(right), "the tiny model got no training image right"
    best = right[probs[right, labels[right]].argmax()]
    return images[best], dataset.classes[labels[best]]


def test_upload_and_gallery_in_chromium(server, browser, run_dir, learnable_dataset, tmp_path):
    image, truth = confident_training_image(run_dir, learnable_dataset)
    upload = tmp_path / "my-item.png"
    Image.fromarray(image).save(upload)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server + "/")

    # the model card and the gallery load on their own
    page.wait_for_selector("#model-card dd:has-text('baseline-small')")
    page.wait_for_selector(".gallery-item >> nth=11")
    assert page.locator("#model-classes .chip").count() == len(learnable_dataset.classes)

    # the drop zone is a keyboard-reachable, button-like element
    drop = page.locator("#drop")
    assert drop.get_attribute("role") == "button" and drop.get_attribute("tabindex") == "0"
    with page.expect_file_chooser() as chooser:  # Enter on the drop zone opens the picker
        drop.press("Enter")  # focuses the zone and presses in one step (no focus race)
    assert chooser.value.is_multiple()

    # upload through the file input
    page.set_input_files("#file-input", str(upload))
    card = page.locator(".result[data-source='upload']").first
    card.locator(".top-class").wait_for()
    page.wait_for_selector(".result[data-source='upload'][data-state='done']", timeout=15_000)
    assert card.locator(".top-class").inner_text() == truth
    assert card.locator(".file-name").inner_text() == "my-item.png"
    assert card.locator(".bar-row").count() == 3
    assert card.locator("img.seen").is_visible()  # the 28x28 image the model saw
    assert "ms" in card.locator(".time").inner_text()

    # under the result: the 8 most similar training images, found through /api/similar
    card.locator(".similar-item >> nth=7").wait_for(timeout=60_000)
    assert card.locator(".similar-item").count() == 8
    assert truth in card.locator(".similar-row").inner_text()

    # click a gallery image: a new card with the true and the predicted class
    item = page.locator(".gallery-item").first
    label = item.get_attribute("data-label")
    item.click()
    page.wait_for_selector(".result[data-source='gallery'][data-state='done']", timeout=15_000)
    gallery_card = page.locator(".result[data-source='gallery']").first
    assert label in gallery_card.locator(".truth").inner_text()
    assert gallery_card.locator(".top-class").inner_text() in learnable_dataset.classes

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []
    page.close()


def test_phone_width_has_no_horizontal_scroll(server, browser):
    page = browser.new_page(viewport={"width": 375, "height": 812})
    page.goto(server + "/")
    page.wait_for_selector(".gallery-item")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.close()


def test_an_image_unlike_the_classes_is_said_so_with_best_guesses(server, browser, tmp_path):
    yy, xx = np.mgrid[:28, :28]
    checker = (((yy // 2 + xx // 2) % 2) * 255).astype(np.uint8)  # no garment at all
    upload = tmp_path / "checker.png"
    Image.fromarray(checker).save(upload)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server + "/")
    page.wait_for_selector("#model-card dd:has-text('baseline-small')")
    page.set_input_files("#file-input", str(upload))
    page.wait_for_selector(".result[data-source='upload'][data-state='done']", timeout=15_000)
    card = page.locator(".result[data-source='upload']").first
    assert card.get_attribute("data-honest") == "ood"
    assert card.locator(".honest-note").inner_text() == (
        "Doesn't look like any of the 10 classes. Best guesses:")
    assert card.locator(".bar-row").count() == 3  # the best guesses are still shown
    assert card.locator("img.seen").is_visible()
    page.close()
