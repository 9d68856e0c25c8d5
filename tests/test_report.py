"""`occlude report`: the page built from a real run (digits model, broken files, a file name with markup)
opened in a real headless Chromium, plus a synthetic 5,000-image folder for page weight and pagination."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from occlude_cli.errors import OccludeError

from occlude_cli.outputs.report import build_report, data_json

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(\"x\")<\\script>'q'.png"  # no '/' possible in a file name; the label test covers '</script>'
EVIL_LABEL = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"

NO_BROWSER = "no /usr/bin/chromium: the report's browser tests need Debian's chromium (apt-get install -y chromium)"
needs_browser = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_BROWSER)


def _cli_app():
    from occlude_cli.cli import app  # the CLI module may move (issue 8): occlude_cli.cli.app

    return app


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real folder run (`occlude run --aggregate`, then `occlude check`) on three digits, an empty .png,
    a text file named .jpg and a digit whose file name holds markup and quotes."""
    base = tmp_path_factory.mktemp("report")
    images, out = base / "in", base / "out"
    images.mkdir()
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        shutil.copy(ROOT / "sample_images" / name, images / name)
    shutil.copy(ROOT / "sample_images" / "digit_3.png", images / EVIL)
    (images / "empty.png").write_bytes(b"")
    (images / "text.jpg").write_text("not a picture\n")
    model = str(ROOT / "sample_models" / "digits_cnn.onnx")
    runner = CliRunner()
    result = runner.invoke(_cli_app(), ["run", model, str(images), "--out", str(out), "--aggregate", "-q"])
    assert result.exit_code == 3, result.output  # 3: some images failed (the two broken files)
    # box x 5..8, y 0..3 of the 8x8 digits: the peak is inside for some digits and not for others
    result = runner.invoke(
        _cli_app(), ["check", model, str(images), "--out", str(out), "--box", "5,0,8,3", "--require-peak", "-q"]
    )
    assert result.exit_code == 3, result.output  # 3: some images could not be checked
    np.save(base / "ramp.npy", np.arange(64, dtype=np.float32).reshape(8, 8))
    result = runner.invoke(
        _cli_app(),
        [
            "compare",
            model,
            str(images / "digit_7.png"),
            str(base / "ramp.npy"),
            "--out",
            str(out),
            "--name",
            "<b>ramp</b>",
            "--steps",
            "8",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(NO_BROWSER)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield instance
        instance.close()


class Page:
    """A browser tab that records console errors, page errors and dialogs (alert() would be one)."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems, self.dialogs = [], []
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url)
        self.page.wait_for_selector("html[data-ready=true]")

    def texts(self, selector: str):
        return self.page.eval_on_selector_all(selector, "nodes => nodes.map(n => n.textContent)")


def _column(page: Page, index: int):
    return page.texts(f"#table-body tr td:nth-child({index})")


@needs_browser
def test_report_of_a_real_run(run_dir, browser):
    summary = json.loads((run_dir / "summary.json").read_text())
    check = json.loads((run_dir / "check.json").read_text())
    assert summary["counts"] == {"ok": 4, "failed": 2, "skipped": 0, "pending": 0}
    assert check["counts"]["error"] == 2 and check["counts"]["pass"] >= 1 and check["counts"]["fail"] >= 1
    page_path = build_report(run_dir)
    assert page_path == run_dir / "index.html"
    html = page_path.read_text(encoding="utf-8")
    assert "<script>alert" not in html and html.count("<script") == 2  # the data block and our script
    tab = Page(browser, page_path.as_uri())
    page = tab.page

    counts = {
        k: int(v)
        for k, v in page.eval_on_selector_all(
            "[data-count]", "nodes => nodes.map(n => [n.dataset.count, n.querySelector('b').textContent])"
        )
    }
    expected = {"run-ok": 4, "run-failed": 2, "run-skipped": 0}
    assert counts == {**expected, **{f"check-{k}": v for k, v in check["counts"].items()}}

    # the file name with markup is shown as text, and nothing ran
    names = tab.texts(".thumb .name")
    assert EVIL in names
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    # failed images first, then check failures, then the rest
    assert names[:2] == ["empty.png", "text.jpg"]
    check_status = {Path(r["path"]).name: r["status"] for r in check["images"]}
    ranks = [0 if n in ("empty.png", "text.jpg") else 1 if check_status[n] == "fail" else 3 for n in names]
    assert ranks == sorted(ranks)

    # every thumbnail on screen has loaded (relative URLs with %-escaped markup in the name included)
    page.locator("#grid").scroll_into_view_if_needed()
    page.wait_for_function("""() => [...document.querySelectorAll('.thumb img')].every(i => i.complete)""")
    widths = page.eval_on_selector_all(".thumb img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 4 and all(w > 0 for w in widths), widths
    assert page.eval_on_selector_all(".thumb img", "imgs => imgs.map(i => i.loading)") == ["lazy"] * 4

    # a thumbnail opens the enlarged view: original | heatmap | overlay
    page.locator(".thumb", has_text="digit_7.png").locator("button").click()
    page.wait_for_selector("#viewer[open]")
    page.wait_for_function("""() => [...document.querySelectorAll('#viewer-panels img')].every(i => i.complete)""")
    panels = page.eval_on_selector_all(
        "#viewer-panels figure",
        """figures => figures.map(
        f => [f.querySelector('figcaption').textContent, f.querySelector('img').naturalWidth])""",
    )
    assert [p[0] for p in panels] == ["original", "heatmap", "overlay"] and all(p[1] > 0 for p in panels), panels
    assert page.text_content("#viewer-title") == "digit_7.png"
    page.click("#viewer-close")
    assert page.evaluate("document.getElementById('viewer').open") is False
    page.locator(".thumb", has_text=EVIL).locator("button").click()
    assert page.text_content("#viewer-title") == EVIL
    page.click("#viewer-close")

    # the table: sort by clicking a header, twice for descending; blanks stay last
    page.click("#tab-table")
    assert len(tab.texts("#table-body tr")) == 6
    headers = tab.texts("#table-head th")
    seconds_col = headers.index("seconds") + 1
    page.click("#table-head th:has-text('seconds')")
    shown = [float(v) for v in _column(tab, seconds_col) if v]
    expected = sorted(r["seconds"] for r in summary["images"] if r["seconds"] is not None)
    assert shown == [float(f"{v:.2f}") for v in expected] and _column(tab, seconds_col)[-2:] == ["", ""]
    page.click("#table-head th:has-text('seconds')")
    assert [float(v) for v in _column(tab, seconds_col) if v] == sorted(shown, reverse=True)

    # the filter box
    page.fill("#filter", "digit_7")
    page.wait_for_function("() => document.querySelectorAll('#table-body tr').length === 1")
    assert _column(tab, 1) == ["digit_7.png"]
    page.fill("#filter", "not an image")
    page.wait_for_function("() => document.querySelectorAll('#table-body tr').length === 2")
    page.fill("#filter", "")
    page.select_option("#status-filter", "check:error")
    assert sorted(_column(tab, 1)) == ["empty.png", "text.jpg"]
    errors = _column(tab, headers.index("error") + 1)  # run and check say the same: shown once
    assert errors == [r["error"] for r in sorted(summary["images"], key=lambda r: r["path"]) if r["error"]]

    comparison = json.loads((run_dir / "digit_7.compare.json").read_text())
    cells = tab.texts("#compare-table tbody td")
    assert cells[:4] == ["digit_7.png", "7 (7)", "<b>ramp</b>", f"{comparison['agreement']['pearson']:.3f}"]
    assert page.eval_on_selector("#compare-table a", "a => a.getAttribute('href')") == "digit_7.compare.png"
    assert page.is_visible("#aggregate") and page.evaluate("document.getElementById('aggregate').naturalWidth") > 0
    assert tab.problems == [] and tab.dialogs == []
    tab.page.close()


def test_rebuild_is_atomic_and_byte_identical(run_dir):
    first = build_report(run_dir).read_bytes()
    second = build_report(run_dir).read_bytes()
    assert first == second
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".index.html")]


def test_bad_out_dir(tmp_path):
    with pytest.raises(OccludeError, match="out_dir is not a folder"):
        build_report(tmp_path / "missing")
    with pytest.raises(OccludeError, match="out_dir holds no occlude results"):
        build_report(tmp_path)


def _page_data(page_path: Path) -> dict:
    html = page_path.read_text(encoding="utf-8")
    start = html.index('id="report-data">') + len('id="report-data">')
    return json.loads(html[start : html.index("</script>", start)])


def test_shards_and_scale_studies_and_records_without_summary(tmp_path):
    """Two shard runs of a patch-size study into one folder: the report joins both shards (from their
    manifests), shows the multi-scale overlay for each image, does not need the summaries, and still finds
    the results in a folder with neither manifests nor summaries (an older occlude's, library writes)."""
    images, out = tmp_path / "in", tmp_path / "out"
    images.mkdir()
    for name in ("digit_0.png", "digit_3.png", "digit_7.png"):
        shutil.copy(ROOT / "sample_images" / name, images / name)
    (images / "empty.png").write_bytes(b"")
    model = str(ROOT / "sample_models" / "digits_cnn.onnx")
    for shard in ("1/2", "2/2"):
        result = CliRunner().invoke(
            _cli_app(),
            ["run", model, str(images), "--out", str(out), "--shard", shard, "--patch", "2,4", "--multiscale", "-q"],
        )
        assert result.exit_code in (0, 3), result.output
    shards = sorted(p.name for p in out.glob("summary*.json"))
    assert shards == ["summary.json", "summary.shard-1-of-2.json", "summary.shard-2-of-2.json"]
    data = _page_data(build_report(out))
    assert data["counts"]["run"] == {"ok": 3, "failed": 1, "skipped": 0}
    by_name = {r["n"]: r for r in data["rows"]}
    assert [r["n"] for r in data["rows"]] == ["empty.png", "digit_0.png", "digit_3.png", "digit_7.png"]
    for name in ("digit_0", "digit_3", "digit_7"):
        assert by_name[f"{name}.png"]["st"] == f"{name}.multiscale" and by_name[f"{name}.png"]["v"] == 3
        assert (out / f"{name}.multiscale.overlay.png").is_file()
    assert dict(data["settings"])["patch"] == "2x2"  # the first scale's record gives the parameters
    for summary in out.glob("summary*.json"):
        summary.unlink()
    assert _page_data(build_report(out))["counts"]["run"] == {"ok": 3, "failed": 1, "skipped": 0}  # manifests
    for manifest in out.glob("manifest*.json"):
        manifest.unlink()
    data = _page_data(build_report(out))
    assert data["counts"]["run"] == {"ok": 3, "failed": 0, "skipped": 0}  # failures lived in the manifests
    assert sorted(r["st"] for r in data["rows"]) == ["digit_0.patch-2x2", "digit_3.patch-2x2", "digit_7.patch-2x2"]


def test_data_block_cannot_end_the_script_element():
    text = data_json({"l": EVIL_LABEL, "n": "<!-- x"})
    assert "<" not in text and json.loads(text) == {"l": EVIL_LABEL, "n": "<!-- x"}


def _synthetic_folder(folder: Path, images: int, png: Path) -> None:
    """``images`` result records (a tenth named by no summary, as after merging shards), a summary, 1% failed
    rows, and one PNG hard-linked as every overlay and heatmap."""
    folder.mkdir()
    rows = []
    for i in range(images):
        stem = f"class_{i % 10}/img_{i:05d}"
        path = f"/data/set/{stem}.jpg"
        if i % 100 == 99:
            rows.append(
                {
                    "path": path,
                    "status": "failed",
                    "target_index": None,
                    "target_label": None,
                    "original_score": None,
                    "peak_y": None,
                    "peak_x": None,
                    "peak_value": None,
                    "seconds": None,
                    "output": None,
                    "error": f"not an image: {path}",
                }
            )
            continue
        label = EVIL_LABEL if i == 7 else f"label {i % 10}"
        score = round(0.5 + (i * 7919 % 1000) / 2000, 6)
        record = {
            "schema": 1,
            "model": {"path": "m.onnx"},
            "image": {"path": path, "width": 8, "height": 8},
            "target": {"index": i % 10, "label": label},
            "score": {"kind": "prob", "original": score},
            "params": {"patch": [2, 2], "stride": [1, 1], "baseline": "zero"},
            "map_info": {"peak": {"y": i % 8, "x": i % 7, "value": score / 10}},
            "map": [[0.0]],
            "timing": {"total_s": 0.5},
        }
        (folder / stem).parent.mkdir(exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(record))
        for kind in ("overlay", "heatmap"):
            os.link(png, folder / f"{stem}.{kind}.png")
        if i % 10 != 3:  # class_3 is left out of the summary: read from its records
            rows.append(
                {
                    "path": path,
                    "status": "ok",
                    "target_index": i % 10,
                    "target_label": label,
                    "original_score": score,
                    "peak_y": i % 8,
                    "peak_x": i % 7,
                    "peak_value": score / 10,
                    "seconds": 0.5,
                    "output": f"{stem}.json",
                    "error": None,
                }
            )
    (folder / "summary.json").write_text(json.dumps({"images": rows}))


@needs_browser
def test_five_thousand_images_stay_paginated(tmp_path, run_dir, browser):
    images = 5000
    folder = tmp_path / "big"
    _synthetic_folder(folder, images, run_dir / "digit_7.overlay.png")
    started = time.perf_counter()
    page_path = build_report(folder)
    build_s = time.perf_counter() - started
    weight = page_path.stat().st_size

    tab = Page(browser, page_path.as_uri())
    page = tab.page
    timing = page.evaluate("""() => {
        const n = performance.getEntriesByType('navigation')[0];
        return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd, render: window.occludeReport.renderMs};
    }""")
    print(
        f"\n5,000-image report: {weight} bytes ({weight / images:.0f} per image), built in {build_s:.2f} s; "
        f"in Chromium: DOMContentLoaded {timing['dom']:.0f} ms, load {timing['load']:.0f} ms, "
        f"script {timing['render']:.0f} ms"
    )
    assert weight < 300 * images  # compact rows, no per-image markup in the file
    counts = {
        k: int(v)
        for k, v in page.eval_on_selector_all(
            "[data-count]", "nodes => nodes.map(n => [n.dataset.count, n.querySelector('b').textContent])"
        )
    }
    assert counts == {"run-ok": 4950, "run-failed": 50, "run-skipped": 0}
    assert page.evaluate("document.querySelectorAll('.thumb').length") == 100
    assert "of 5000" in page.text_content("#page-info")
    assert tab.texts(".thumb .name")[:50] == [f"class_9/img_{i:05d}.jpg" for i in range(99, images, 100)]
    page.click("#tab-table")
    assert page.evaluate("document.querySelectorAll('#table-body tr').length") == 100
    assert page.evaluate("document.querySelectorAll('.thumb').length") == 0  # one view in the DOM at a time
    page.click("#next")
    assert page.evaluate("document.querySelectorAll('#table-body tr').length") == 100
    assert "101\u2013200 of 5000" in page.text_content("#page-info")
    page.click("#table-head th:has-text('score')")
    page.click("#table-head th:has-text('score')")
    top = [float(v) for v in _column(tab, 4)]
    best = max(0.5 + (i * 7919 % 1000) / 2000 for i in range(images) if i % 100 != 99)
    assert top == sorted(top, reverse=True) and top[0] == pytest.approx(best, abs=1e-4)
    page.locator("#table-body button").first.click()  # the originals are not reachable: heatmap | overlay
    page.wait_for_selector("#viewer[open]")
    assert tab.texts("#viewer-panels figcaption") == ["heatmap", "overlay"]
    page.click("#viewer-close")
    page.fill("#filter", "onerror")
    page.wait_for_function("() => document.querySelectorAll('#table-body tr').length === 1")
    assert _column(tab, 3) == [f"{EVIL_LABEL} (7)"]
    assert tab.problems == [] and tab.dialogs == []
    tab.page.close()


@needs_browser
def test_diff_view(tmp_path, browser):
    """occlude diff --report: one row per image with both predictions, the numbers and the picture, a flipped
    prediction marked, hostile text shown as text."""
    import numpy as np
    from onnx_models import rectangle_model
    from PIL import Image

    from occlude_cli import diff_folder

    a = rectangle_model(tmp_path / "a.onnx", rect=(4, 6, 9, 12))
    b = rectangle_model(tmp_path / "b.onnx", rect=(2, 2, 8, 8))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for name in ("one.png", "<b>two<\\b>.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(images / name)
    result = diff_folder(
        a, b, images, tmp_path / "out", patch=4, stride=2, score="logit", report=True, min_rank_corr=0.99
    )
    tab = Page(browser, (tmp_path / "out" / "index.html").as_uri())
    rows = tab.page.eval_on_selector_all(
        "#diff-table tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    assert len(rows) == 2
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == {"one.png", "<b>two<\\b>.png"}
    for row in result.rows:
        cells = by_name[Path(row["path"]).name]
        assert cells[4] == f"{row['rank_corr']:.3f}" and cells[7] == f"{row['ssim']:.3f}"
        assert cells[8] == row["gates"]
    widths = tab.page.eval_on_selector_all("#diff-table img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 2 and all(w > 0 for w in widths)
    assert tab.problems == [] and tab.dialogs == []
    tab.page.close()


@pytest.mark.parametrize(
    "field, value",
    [
        ("model", "x"),
        ("model", [1]),
        ("settings", [1]),
        ("images", "x"),
        ("images", {"a": 1}),
        ("shard", ["a", "b"]),
        ("shard", [1]),
        ("shard", "1/2"),
        ("state", ["finished"]),
        ("process", "x"),
    ],
)
def test_report_on_a_hand_edited_manifest(tmp_path, field, value):
    """A manifest edited by hand (a field of another type) is left out like an unreadable one: `occlude report`
    still builds the page from the summary, never an internal error."""
    model, out = ROOT / "sample_models" / "digits_cnn.onnx", tmp_path / "out"
    images = [str(ROOT / "sample_images" / n) for n in ("digit_0.png", "digit_3.png")]
    assert CliRunner().invoke(_cli_app(), ["run", str(model), *images, "-o", str(out), "-q"]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest[field] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(_cli_app(), ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert _page_data(out / "index.html")["counts"]["run"] == {"ok": 2, "failed": 0, "skipped": 0}


@pytest.mark.parametrize(
    "field, value",
    [
        ("output", ["x"]),
        ("output", {"a": 1}),
        ("key", ["k"]),
        ("fingerprint", [5]),
        ("peak_y", "<b>evil"),
        ("seconds", [1]),
    ],
)
def test_report_on_a_manifest_row_edited_by_hand(tmp_path, field, value):
    """A manifest row with a field of another type: that field is unknown (None), the page is built."""
    model, out = ROOT / "sample_models" / "digits_cnn.onnx", tmp_path / "out"
    image = str(ROOT / "sample_images" / "digit_3.png")
    assert CliRunner().invoke(_cli_app(), ["run", str(model), image, "-o", str(out), "-q"]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["images"][0][field] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(_cli_app(), ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "<b>evil" not in (out / "index.html").read_text()
    assert _page_data(out / "index.html")["counts"]["run"] == {"ok": 1, "failed": 0, "skipped": 0}


_EDITS = [
    (f"{doc}:{key}", value)
    for doc, keys in (
        ("compare", ("image", "target", "agreement", "curves", "better", "other_map")),
        ("check", ("settings", "summary", "images")),
        ("check_row", ("reasons", "regions", "target_label", "overlay")),
    )
    for key in keys
    for value in ("x", [1], 5.5, None)
]


@pytest.mark.parametrize("edit, value", _EDITS)
def test_report_on_check_and_compare_documents_edited_by_hand(tmp_path, run_dir, edit, value):
    """check.json and STEM.compare.json with a field of another type: the page is still built from what can be
    read (never an internal error), and the run's rows are all there."""
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    doc, key = edit.split(":")
    path = out / "check.json" if doc.startswith("check") else next(out.glob("*.compare.json"))
    document = json.loads(path.read_text())
    (document["images"][0] if doc == "check_row" else document)[key] = value
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(_cli_app(), ["report", str(out)])
    assert result.exit_code == 0, result.output
    data = _page_data(out / "index.html")
    assert data["counts"]["run"] == _page_data(build_report(run_dir))["counts"]["run"]
    assert len(data["compare"]) == 1


@pytest.mark.parametrize(
    "edit, value",
    [
        (f"{doc}:{key}", value)
        for doc, keys in (
            ("summary", ("images",)),
            ("summary_row", ("output", "status")),
            ("record", ("model", "params", "map_info", "score", "timing")),
        )
        for key in keys
        for value in ("x", [1], 5.5, None)
    ],
)
def test_report_on_a_folder_without_manifest_edited_by_hand(tmp_path, run_dir, edit, value):
    """A folder without manifests (an older occlude's) whose summary.json or a result record holds a field of
    another type: the page is built from what can be read, never an internal error."""
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    for manifest in out.glob("manifest*.json"):
        manifest.unlink()
    doc, key = edit.split(":")
    summary = json.loads((out / "summary.json").read_text())
    first = next(r for r in summary["images"] if r["status"] == "ok")
    path = out / ("summary.json" if doc.startswith("summary") else first["output"])
    document = json.loads(path.read_text())
    (document["images"][summary["images"].index(first)] if doc == "summary_row" else document)[key] = value
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(_cli_app(), ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "<b>ramp" not in (out / "index.html").read_text()


def test_report_while_the_run_is_still_writing(tmp_path):
    """A folder whose run is still going (its manifest says running, its process alive): `occlude report` says
    so, rather than 'holds no occlude results'."""
    import os
    import socket

    model, out = ROOT / "sample_models" / "digits_cnn.onnx", tmp_path / "out"
    image = str(ROOT / "sample_images" / "digit_3.png")
    assert CliRunner().invoke(_cli_app(), ["run", str(model), image, "-o", str(out), "-q"]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.update(state="running", process={"host": socket.gethostname(), "pid": os.getpid()})
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(_cli_app(), ["report", str(out)])
    assert result.exit_code == 1
    assert result.stderr.count("error:") == 1 and "still running" in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["check.json", "digit_3.compare.json", "manifest.json", "digit_3.json"])
def test_report_does_not_block_on_a_fifo_named_like_a_result(tmp_path, name):
    """A named pipe in the folder under a result file's name is read as unreadable (left out), never opened
    for a blocking read: `occlude report` finishes."""
    import os
    import subprocess
    import sys

    model, out = ROOT / "sample_models" / "digits_cnn.onnx", tmp_path / "out"
    image = str(ROOT / "sample_images" / "digit_3.png")
    assert CliRunner().invoke(_cli_app(), ["run", str(model), image, "-o", str(out), "-q"]).exit_code == 0
    (out / name).unlink(missing_ok=True)
    os.mkfifo(out / name)
    command = [sys.executable, "-m", "occlude_cli", "report", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
