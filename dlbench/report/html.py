"""``dlbench report RUN... --out report.html``: one self-contained HTML page per set of runs.

No network: no external scripts, styles or fonts; every plot is inline SVG. Per run: provenance and
settings (``DIR/manifest.json`` when present, read defensively as JSON), "N of M ok" with failures,
the leaderboards with published numbers and deltas, throughput and memory against length, training
curves, the eigenvalue picture where eigenvalue rows exist, and the warnings of ``dlbench show``.
It is the page a researcher attaches to a pull request or opens from a cluster.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlbench.errors import DlbenchError
from dlbench.report.leaderboard import DISPLAYS, NOTES, leaderboards
from dlbench.report.plots import PLOTS
from dlbench.report.show import _provenance_lines, show_frame
from dlbench.report.summary import FAILED_STATUSES, PROFILE_CELL, TRAINING_RUN, _count_line, outcomes

MANIFEST_FILE = "manifest.json"
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td:nth-child(-n+3), th:nth-child(-n+3) { text-align: left; }
.note { color: #555; font-size: .85em; } .warn { color: #8a5a00; } .fail { color: #b00020; }
figure.plot { margin: 1em 0; } figure.plot svg { max-width: 100%; height: auto; display: block; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .8em; }
nav a { margin-right: 1em; }
"""


def read_manifest(directory: Path) -> tuple[dict[str, Any] | None, str]:
    """The run folder's manifest (any JSON object) and a note; never raises on a bad or missing file."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None, f"no {MANIFEST_FILE} (an older run folder): settings cannot be shown"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"{path} is not readable JSON ({error}); settings not shown"
    if not isinstance(data, dict):
        return None, f"{path} holds a JSON {type(data).__name__}, not an object; settings not shown"
    return data, ""


# The references matplotlib's SVG makes to its own ids: id="X", url(#X) and xlink:href="#X".
_SVG_IDS = re.compile(r'((?<=\s)id="|url\(#|xlink:href="#)')


def _svg(figure, prefix: str) -> str:
    """A matplotlib Figure as an inline SVG element (no XML prolog, no external references).

    Text stays text (``svg.fonttype`` none): the page is a fraction of the size of one with every
    glyph drawn as a path, and its labels can be searched and copied. Every id is prefixed with
    ``prefix``: ids are unique in the page (matplotlib numbers "axes_1" afresh in each figure), and
    with a fixed hash salt and no date the same rows give the same bytes.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dlbench"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return _SVG_IDS.sub(lambda m: m.group(1) + prefix, text[text.index("<svg") :])


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for row in body:
        cells = []
        for cell in row:
            bold = cell.startswith("**") and cell.endswith("**")
            text = html.escape(cell.strip("*") if bold else cell)
            cells.append(f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _plugin(entry) -> str:
    """One loaded plugin of a manifest: its spec and what pins it (version or the file's sha256)."""
    if not isinstance(entry, dict):
        return str(entry)
    pin = entry.get("version") or str(entry.get("sha256") or "")[:12]
    return f"{entry.get('spec', '?')} ({pin})" if pin else str(entry.get("spec", "?"))


def run_section(path: str | Path, anchor: str) -> str:
    """The HTML of one run: provenance, outcomes, leaderboards, plots, warnings, settings."""
    from dlbench.rundir import read_rows

    path = Path(path)
    rows = read_rows([path])
    directory = path if path.is_dir() else path.parent
    parts = [f'<section id="{anchor}"><h2>{html.escape(str(path))}</h2>']
    parts.append("<p>" + "<br>".join(html.escape(line) for line in _provenance_lines(rows)) + "</p>")

    found = outcomes(rows)
    if len(found):
        items = []
        for kind, noun, keys in (("training", "runs", TRAINING_RUN), ("profile", "cells", PROFILE_CELL)):
            part = found[found["kind"] == kind]
            if not len(part):
                continue
            items.append(f"<li>{html.escape(_count_line(part, noun))}</li>")
            for r in part[part["status"].isin(FAILED_STATUSES)].itertuples():
                where = " ".join(str(getattr(r, k)) for k in keys if str(getattr(r, k)) and k != "layer_options")
                items.append(f'<li class="fail">{html.escape(r.status)}: {html.escape(where)}'
                             + (f": {html.escape(r.reason)}" if r.reason else "") + "</li>")  # fmt: skip
        parts.append("<h3>Outcome</h3><ul>" + "".join(items) + "</ul>")

    try:
        boards = leaderboards(rows)
    except DlbenchError as error:
        boards = {}
        parts.append(f'<p class="note">no leaderboard: {html.escape(str(error))}</p>')
    for kind, board in boards.items():
        parts.append(f"<h3>Leaderboard: {kind}</h3>")
        for title, (header, *body) in DISPLAYS[kind](board, False).items():
            parts.append(f"<h4>{html.escape(title)}</h4>" + _table(header, body))
        parts.append(f'<p class="note">{html.escape(NOTES[kind].replace("**bold**", "bold"))}</p>')

    plots = []
    for kind, draw in PLOTS.items():
        try:
            plots.append((kind, draw(rows, None)))
        except DlbenchError:
            continue  # nothing of this kind in this run
    if plots:
        parts.append("<h3>Plots</h3>")
        for kind, figure in plots:
            parts.append(f'<figure class="plot" data-kind="{kind}">{_svg(figure, f"{anchor}-{kind}-")}<figcaption class="note">{kind}'
                         "</figcaption></figure>")  # fmt: skip

    _, _, notes = show_frame(rows)
    parts.append("<h3>Warnings</h3>")
    if notes:
        parts.append("<ul>" + "".join(f'<li class="warn">{html.escape(w)}: {html.escape(what)}</li>' for w, what in notes)
                     + "</ul>")  # fmt: skip
    else:
        parts.append("<p>none: no outliers, no slow first runs, no failed cells</p>")

    manifest, note = read_manifest(directory)
    parts.append("<h3>Settings and provenance</h3>")
    if manifest is not None:
        # The gist first; the whole manifest (every run's settings, hundreds of lines) stays folded.
        facts = [("kind", manifest.get("kind")), ("suite", manifest.get("suite")),
                 ("created", manifest.get("created_utc")), ("dlbench", manifest.get("dlbench_version")),
                 ("git", str(manifest.get("git_commit") or "")[:12] + (" (dirty)" if manifest.get("git_dirty") else "")),
                 ("--set", " ".join(map(str, manifest.get("sets") or ())) or "none"),
                 ("plugins", ", ".join(_plugin(p) for p in manifest.get("plugins") or ()) or "none"),
                 ("entries", len(manifest.get("entries") or ()))]  # fmt: skip
        parts.append("<ul class=\"facts\">" + "".join(f"<li>{name}: {html.escape(str(value))}</li>" for name, value in facts
                                                       if value not in (None, "")) + "</ul>")  # fmt: skip
        parts.append(f"<details><summary>{MANIFEST_FILE}</summary><pre>"
                     + html.escape(json.dumps(manifest, indent=2, sort_keys=True, default=str)) + "</pre></details>")  # fmt: skip
    else:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    plan = directory / "plan.json"
    if plan.is_file():
        try:
            text = json.dumps(json.loads(plan.read_text()), indent=2, sort_keys=True)
        except (OSError, ValueError):
            text = "(plan.json is not readable JSON)"
        parts.append(f"<details><summary>plan.json</summary><pre>{html.escape(text)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def report_html(paths: Sequence[str | Path], title: str = "dlbench report") -> str:
    """The whole page for ``paths`` (run directories or rows files), one section each."""
    if not paths:
        raise DlbenchError("give at least one run directory or rows file")
    anchors = [f"run{i}" for i in range(len(paths))]
    sections = [run_section(p, a) for p, a in zip(paths, anchors, strict=True)]
    nav = "".join(f'<a href="#{a}">{html.escape(str(p))}</a>' for p, a in zip(paths, anchors, strict=True))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(paths: Sequence[str | Path], out: str | Path = "report.html") -> Path:
    """Write :func:`report_html` to ``out`` (must end in .html); returns the path."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise DlbenchError(f"--out {out}: the report is HTML; give a file name ending in .html")
    text = report_html(paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
