"""`dlbench report`: one self-contained HTML page; its structure, and its rendering in headless Chromium."""

import csv
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dlbench.cli import main
from dlbench.report.html import report_html

ROOT = Path(__file__).resolve().parents[1]
RUNS = [ROOT / "results/cpu-smoke", ROOT / "results/cpu-scan-acceptance"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", *map(str, RUNS), "--out", str(out)]) == 0
    return out


def test_page_is_self_contained_with_every_section(page):
    text = page.read_text()
    parser = _Tags()
    parser.feed(text)
    tags = parser.tags
    # No network: no external script, stylesheet, image or font.
    assert not [t for t, a in tags if t in ("script", "link", "img", "iframe")]
    assert not re.search(r"url\(\s*['\"]?https?:", text) and "@import" not in text
    assert not [a for _, a in tags if any(v and str(v).startswith(("http:", "https:", "//")) for k, v in a.items()
                                         if k in ("src", "href"))]  # fmt: skip
    assert [a["id"] for t, a in tags if t == "section"] == ["run0", "run1"]
    kinds = [a["data-kind"] for t, a in tags if t == "figure"]
    assert kinds == ["training", "throughput", "memory"]
    assert text.count("<svg") == 3
    # Leaderboards with published columns, outcomes, warnings, provenance.
    assert "Leaderboard: training" in text and "Leaderboard: throughput" in text and "<th>published</th>" in text
    assert "16 of 16 runs ok" in text and "16 of 16 cells ok" in text
    commits = {csv.DictReader(open(run / "rows.csv")).__next__()["git_commit"][:12] for run in RUNS}
    assert "<h3>Warnings</h3>" in text and all(f"git {commit}" in text for commit in commits)
    # Each committed folder's manifest is shown with its settings.
    for run in RUNS:
        assert json.loads((run / "manifest.json").read_text())["run_id"] in text


def test_ids_are_unique_references_resolve_and_the_page_is_reproducible(page, tmp_path):
    text = page.read_text()
    ids = re.findall(r'\bid="([^"]*)"', text)
    assert len(ids) > 100 and len(ids) == len(set(ids)), [i for i in set(ids) if ids.count(i) > 1][:5]
    references = set(re.findall(r"url\(#([^)]*)\)", text)) | set(re.findall(r'href="#([^"]*)"', text))
    assert references and references <= set(ids), sorted(references - set(ids))[:5]
    # No date in the plots, a fixed hash salt: the committed page regenerates to the same bytes.
    again = tmp_path / "again.html"
    assert main(["report", *map(str, RUNS), "--out", str(again)]) == 0
    assert again.read_bytes() == page.read_bytes()


def test_manifest_is_shown_and_a_broken_one_is_survived(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(RUNS[0] / "rows.csv", run / "rows.csv")
    manifest = {"dlbench_version": "9.9", "runs": {"a": {"train.steps": 20}}, "suite": "smoke", "git_commit": "ab" * 20,
                "git_dirty": True, "plugins": [{"spec": "my_layer.py", "sha256": "0123456789abcdef" * 4}]}  # fmt: skip
    (run / "manifest.json").write_text(json.dumps(manifest))
    text = report_html([run])
    assert "&quot;train.steps&quot;: 20" in text
    # The gist above the folded manifest: suite, commit (dirty), plugins pinned by their sha256.
    assert "<li>suite: smoke</li>" in text and f"<li>git: {'ab' * 6} (dirty)</li>" in text
    assert "<li>plugins: my_layer.py (0123456789ab)</li>" in text and "<details open>" not in text
    (run / "manifest.json").write_text("{not json")
    assert "is not readable JSON" in report_html([run])


def test_bad_out_and_missing_run(tmp_path, capsys):
    assert main(["report", str(RUNS[0]), "--out", str(tmp_path / "r.md")]) == 2
    assert "ending in .html" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")]) == 2


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# Injected into a copy of the page (the page itself has no script): records errors and, once loaded,
# the size and position of every plot, into a <pre id="probe"> that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const plots = [...document.querySelectorAll('figure.plot svg')].map(s => {
    const r = s.getBoundingClientRect(); const st = getComputedStyle(s);
    return {w: r.width, h: r.height, x: r.left, visible: st.display !== 'none' && st.visibility !== 'hidden',
            paths: s.querySelectorAll('path, use').length};
  });
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({errors: window.__errors, plots: plots, width: innerWidth});
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(_browser() is None, reason="no headless browser (chromium) on this machine: apt-get install chromium")
def test_page_renders_in_headless_chromium_with_every_plot_visible(page, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}",
             "--window-size=1280,1000"]  # fmt: skip
    dom = subprocess.run([_browser(), *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, flags=re.S)
    assert found, dom.stdout[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert len(probe["plots"]) == 3
    for plot in probe["plots"]:
        # Visible: laid out at a real size inside the window, with drawn content.
        assert plot["visible"] and plot["w"] > 300 and plot["h"] > 150 and 0 <= plot["x"] < probe["width"], plot
        assert plot["paths"] > 20, plot
    # A screenshot of the top of the real page (kept beside the page for a person to look at).
    shot = page.with_suffix(".png")
    subprocess.run([_browser(), *flags, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                   capture_output=True, timeout=180, check=True)  # fmt: skip
    assert shot.stat().st_size > 20_000
