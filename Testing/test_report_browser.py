"""The report in a real browser: headless Chromium opens it, it renders without errors, images
load, nothing overflows an A4 page width, the first screen holds the grades, and a screenshot
is saved (to $IRONMAPPING_SCREENSHOT_DIR when set, else the test's temporary folder).

Chromium comes from Debian (``.ci/install-chromium``, called by ``.ci/run``); where it cannot
be installed these tests are skipped with that reason.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from IronMapping import RESEARCH_USE_STATEMENT, pipeline

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-extensions"]
FIRST_SCREEN = (1280, 900)   # a radiology workstation window
A4_WIDTH_PX = 794            # 210 mm at 96 dpi

# Collects what the page did: script errors, images that did not load, horizontal overflow,
# and where the first-screen items end. Inserted only into the test's probe copy of the page.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const rows = [...document.querySelectorAll('table.headline tbody tr')].map(tr => ({
    level: tr.className, name: tr.querySelector('th').textContent,
    text: tr.textContent, bottom: tr.getBoundingClientRect().bottom}));
  const box = s => { const el = document.querySelector(s);
                     return el ? {bottom: el.getBoundingClientRect().bottom, text: el.textContent} : null; };
  const images = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                 width: i.getBoundingClientRect().width}));
  const out = {errors: window.__errors, rows, images, pattern: box('.pattern-text'),
               research: box('.first-screen .research'), nh: box('.nh'),
               scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
               height: document.documentElement.scrollHeight};
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    for name in (os.environ.get("IRONMAPPING_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


pytestmark = pytest.mark.skipif(
    chromium() is None, reason="Chromium is not installed here (.ci/install-chromium installs "
                               "the Debian package 'chromium'; it could not on this machine)")


def run_chromium(*args, timeout=180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="im-chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def probe(page: Path, size) -> dict:
    copy = page.with_name("probe_" + page.name)
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                    encoding="utf-8")
    done = run_chromium(f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=10000",
                        "--dump-dom", copy.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the page did not finish loading in Chromium: {done.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(match.group(1)))


def screenshot(page: Path, name: str, size, tmp_path) -> Path:
    folder = Path(os.environ.get("IRONMAPPING_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    run_chromium(f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=10000",
                 f"--screenshot={target}", page.as_uri())  # the budget lets every image paint
    assert target.is_file(), f"Chromium wrote no screenshot {target}"
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000, "the screenshot is (nearly) blank"
    return target


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    result = pipeline.run_demo(out)
    return result, out / "report.html"


def test_demo_report_renders_and_its_first_screen_holds_the_grades(demo_report, tmp_path):
    result, page = demo_report
    seen = probe(page, FIRST_SCREEN)
    assert seen["errors"] == []
    assert seen["images"] and all(i["ok"] for i in seen["images"]), "an image did not load"
    assert seen["scrollWidth"] <= seen["innerWidth"], "the page overflows sideways"
    height = FIRST_SCREEN[1]
    assert seen["pattern"]["bottom"] <= height and seen["research"]["bottom"] <= height
    assert RESEARCH_USE_STATEMENT in seen["research"]["text"]
    assert seen["nh"] and seen["nh"]["bottom"] <= height  # the neonatal question, answered
    summary = result.summary
    rows = {r["name"]: r for r in seen["rows"]}
    assert set(rows) == {r["name"] for r in summary["regions"]}, "a region is missing on top"
    for region in summary["regions"]:
        row = rows[region["name"]]
        if region.get("grade") or region["organ"] in ("thyroid", "spleen"):
            assert row["bottom"] <= height, f"{region['name']} is below the first screen"
        if region.get("grade"):
            assert region["grade"] in row["text"]
    liver = rows["liver"]["text"]
    assert f"LIC {summary['regions'][0]['lic_mg_per_g']:.2f} mg Fe/g dw (Wood 2005)" in liver
    assert "x skeletal muscle" in rows["thyroid"]["text"]
    screenshot(page, "demo_first_screen.png", FIRST_SCREEN, tmp_path)
    screenshot(page, "demo_full_page.png", (FIRST_SCREEN[0], min(int(seen["height"]) + 20, 12000)),
               tmp_path)


def test_demo_report_fits_an_a4_page_and_prints(demo_report, tmp_path):
    _, page = demo_report
    seen = probe(page, (A4_WIDTH_PX, 1123))
    assert seen["scrollWidth"] <= A4_WIDTH_PX, "the layout is wider than an A4 page"
    assert all(i["width"] <= A4_WIDTH_PX for i in seen["images"])
    pdf = tmp_path / "printed.pdf"
    run_chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert 2 <= pages <= 8, f"{pages} printed pages"
    assert (page.parent / "report.pdf").read_bytes().startswith(b"%PDF")


KIDNEY = Path(os.environ.get("IRONMAPPING_TEST_DATA") or Path(__file__).resolve().parents[2] /
              "shared" / "data") / "ukat-kidney-r2star" / "ge"


@pytest.mark.slow
@pytest.mark.skipif(not KIDNEY.is_dir(), reason=f"real 3 T kidney data not found at {KIDNEY}")
def test_real_coronal_3t_study_renders_in_radiological_convention(tmp_path):
    from IronMapping.io import load_multiecho

    image = load_multiecho(sorted(glob.glob(str(KIDNEY / "*.nii.gz"))))
    result = pipeline.run(image, tmp_path / "kidney", inputs={"input": str(KIDNEY)})
    page = result.files["report"]
    text = page.read_text(encoding="utf-8")
    assert "coronal slices in radiological convention" in text
    assert "liver iron bands at 3 T" in text
    seen = probe(page, FIRST_SCREEN)
    assert seen["errors"] == [] and all(i["ok"] for i in seen["images"])
    assert seen["scrollWidth"] <= seen["innerWidth"]
    screenshot(page, "kidney_3t_full_page.png", (FIRST_SCREEN[0], min(int(seen["height"]) + 20, 12000)),
               tmp_path)
