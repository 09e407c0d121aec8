"""Night reports as files: a hypnogram PNG and a self-contained HTML page.

Both draw the same tracks: the predicted hypnogram, the reference hypnogram when the recording has one
(stacked under it, on the same time axis), the stage probabilities and the signal quality per epoch. The
HTML page needs nothing from the network (inline SVG, no scripts), so it opens on an offline box; the PNG is
drawn with matplotlib (installed with neurokit2), imported only when a PNG is asked for.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edged.sinks.night import display_order, summary_text

# One colour per class, shared by every view (and by the dashboard's legend).
STAGE_COLOURS = {
    "W": "#e4572e", "REM": "#8e44ad", "N1": "#76c7f0", "Light": "#76c7f0", "S": "#3b7dd8",
    "NREM": "#3b7dd8", "N2": "#3b7dd8", "N3": "#1b2f6e", "Deep": "#1b2f6e",
}
_FALLBACK = "#888888"


@dataclass
class Track:
    """One hypnogram row: a label and one stage (or None) per epoch of the night's grid."""

    label: str
    stages: Sequence[str | None]
    classes: Sequence[str]


@dataclass
class NightReport:
    title: str
    epoch_seconds: float
    start: float | None  # POSIX time of epoch 0, or None when unknown (a file without a clock)
    summary: dict[str, Any]
    tracks: list[Track]
    probabilities: dict[str, list[float | None]] = field(default_factory=dict)  # class -> per epoch
    quality: list[float | None] = field(default_factory=list)
    agreement: dict[str, Any] | None = None  # accuracy, kappa, f1, confusion, classes
    notes: list[str] = field(default_factory=list)


def write_report(report: NightReport, path: str | Path) -> Path:
    """Write the report; the format follows the suffix: ``.html``, ``.png`` or ``.json``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        path.write_text(render_html(report))
    elif suffix == ".png":
        render_png(report, path)
    elif suffix == ".json":
        path.write_text(json.dumps(report.summary, indent=1) + "\n")
    else:
        raise ValueError(f"{path}: a report is .html, .png or .json")
    return path


# ------------------------------------------------------------------------------------------- PNG


def render_png(report: NightReport, path: str | Path, *, dpi: int = 110) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # the object API: no global pyplot state in a daemon

    hours = report.epoch_seconds / 3600.0
    rows = len(report.tracks) + (1 if report.probabilities else 0)
    fig = Figure(figsize=(11, 1.9 * rows + 0.8), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax, track in zip(axes, report.tracks):
        order = display_order(track.classes)
        level = {c: len(order) - 1 - i for i, c in enumerate(order)}
        xs, ys = [], []
        for i, s in enumerate(track.stages):
            y = level.get(s) if s is not None else None
            xs += [i * hours, (i + 1) * hours]
            ys += [y, y] if y is not None else [float("nan")] * 2
        ax.plot(xs, ys, color="#333333", linewidth=0.9)
        for c in order:  # colour the epochs of each stage on its row, so stages read at a glance
            spans = [(i * hours, hours) for i, s in enumerate(track.stages) if s == c]
            if spans:
                ax.broken_barh(spans, (level[c] - 0.35, 0.7), facecolors=STAGE_COLOURS.get(c, _FALLBACK), alpha=0.8)
        ax.set_yticks(range(len(order)), list(reversed(order)))
        ax.set_ylim(-0.6, len(order) - 0.4)
        ax.set_title(track.label, loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if report.probabilities:
        ax = axes[-1]
        classes = display_order(list(report.probabilities))
        n = max(len(v) for v in report.probabilities.values())
        x = [i * hours for i in range(n)]
        stacked = [[(report.probabilities[c][i] or 0.0) for i in range(n)] for c in classes]
        ax.stackplot(x, stacked, labels=classes, colors=[STAGE_COLOURS.get(c, _FALLBACK) for c in classes],
                     step="post", alpha=0.85)
        if report.quality:
            ax.plot(x, [q if q is not None else float("nan") for q in report.quality], color="black",
                    linewidth=0.8, label="quality")
        ax.set_ylim(0, 1)
        ax.set_title("stage probabilities (stacked) and signal quality", loc="left", fontsize=10)
        ax.legend(loc="upper right", fontsize=7, ncols=len(classes) + 1)
    axes[-1].set_xlabel("hours from the start of the night")
    fig.suptitle(report.title, fontsize=11, x=0.01, ha="left")
    fig.savefig(path)
    return Path(path)


# ------------------------------------------------------------------------------------------ HTML

_W, _ROW = 1000, 22  # SVG width and height per hypnogram level


def _svg_hypnogram(track: Track) -> str:
    order = display_order(track.classes)
    n = max(len(track.stages), 1)
    height = _ROW * len(order) + 20
    x = lambda i: 60 + (_W - 70) * i / n  # noqa: E731
    parts = [f'<svg viewBox="0 0 {_W} {height}" width="100%" role="img" aria-label="{html.escape(track.label)}">']
    for r, c in enumerate(order):
        parts.append(f'<text x="52" y="{r * _ROW + 15}" text-anchor="end" font-size="12">{html.escape(c)}</text>')
        parts.append(f'<line x1="60" x2="{_W - 10}" y1="{r * _ROW + 11}" y2="{r * _ROW + 11}" stroke="#eee"/>')
    row = {c: r for r, c in enumerate(order)}
    for i, s in enumerate(track.stages):
        if s is None:
            continue
        parts.append(f'<rect x="{x(i):.2f}" y="{row[s] * _ROW + 4}" width="{max(x(i + 1) - x(i), 0.5):.2f}" '
                     f'height="14" fill="{STAGE_COLOURS.get(s, _FALLBACK)}"><title>epoch {i}: {s}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_probabilities(probabilities: dict[str, list[float | None]], quality: list[float | None]) -> str:
    classes = display_order(list(probabilities))
    n = max((len(v) for v in probabilities.values()), default=0)
    if not n:
        return ""
    h = 120
    x = lambda i: 60 + (_W - 70) * i / n  # noqa: E731
    parts = [f'<svg viewBox="0 0 {_W} {h + 20}" width="100%" role="img" aria-label="stage probabilities">']
    bottom = [0.0] * n
    for c in classes:
        top = [bottom[i] + (probabilities[c][i] or 0.0) for i in range(n)]
        pts = [f"{x(i):.1f},{h - top[i] * h:.1f} {x(i + 1):.1f},{h - top[i] * h:.1f}" for i in range(n)]
        back = [f"{x(i + 1):.1f},{h - bottom[i] * h:.1f} {x(i):.1f},{h - bottom[i] * h:.1f}" for i in reversed(range(n))]
        parts.append(f'<polygon points="{" ".join(pts + back)}" fill="{STAGE_COLOURS.get(c, _FALLBACK)}" '
                     f'opacity="0.85"><title>{html.escape(c)}</title></polygon>')
        bottom = top
    if quality:
        pts = [f"{x(i + 0.5):.1f},{h - q * h:.1f}" for i, q in enumerate(quality) if q is not None]
        parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="black" stroke-width="1"/>')
    parts.append(f'<text x="52" y="12" text-anchor="end" font-size="11">1</text>'
                 f'<text x="52" y="{h}" text-anchor="end" font-size="11">0</text></svg>')
    legend = " ".join(f'<span style="background:{STAGE_COLOURS.get(c, _FALLBACK)};color:white;padding:0 6px">'
                      f'{html.escape(c)}</span>' for c in classes)
    return "".join(parts) + f"<p>{legend} &nbsp; black line: signal quality</p>"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1f}"
    return html.escape(str(v))


def render_html(report: NightReport) -> str:
    s = report.summary
    started = (datetime.fromtimestamp(report.start, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
               if report.start is not None else "unknown")
    rows = [("Time in bed (min)", s["tib_minutes"]), ("Total sleep time (min)", s["tst_minutes"]),
            ("Sleep efficiency (%)", s["sleep_efficiency_percent"]), ("Sleep-onset latency (min)", s["sol_minutes"]),
            ("WASO (min)", s["waso_minutes"]), ("Awakenings", s["awakenings"]),
            ("Sleep period time (min)", s["spt_minutes"]), ("Unscored (min)", s["unscored_minutes"]),
            ("Low signal quality (min)", s["low_quality_minutes"])]
    stage_rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{_fmt(v['minutes'])}</td>"
        f"<td>{_fmt(v.get('percent_of_tst'))}</td><td>{_fmt(v.get('percent_of_tib'))}</td></tr>"
        for c, v in s["stages"].items())
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}.warn{background:#fff3cd;padding:.5em 1em;border:1px solid #e0c060}"
        "</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        f"<p>Night starting {started}; {s['epochs']} epochs of {s['epoch_seconds']:g} s; model "
        f"<code>{html.escape(str(s.get('model', '')))}</code>.</p>",
    ]
    out += [f"<p class='warn'>{html.escape(note)}</p>" for note in report.notes]
    out.append("<h2>Summary</h2><table id='summary'>"
               + "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in rows) + "</table>")
    out.append("<table id='stages'><tr><th>Stage</th><th>min</th><th>% of TST</th><th>% of TIB</th></tr>"
               + stage_rows + "</table>")
    out.append("<h2>Hypnogram</h2>")
    for track in report.tracks:
        out.append(f"<h3>{html.escape(track.label)}</h3>{_svg_hypnogram(track)}")
    if report.probabilities:
        out.append("<h2>Stage probabilities</h2>" + _svg_probabilities(report.probabilities, report.quality))
    if report.agreement:
        a = report.agreement
        classes = a["classes"]
        out.append(f"<h2>Agreement with the reference</h2><p>{a['n']} epochs: accuracy {a['accuracy']:.3f}, "
                   f"Cohen's kappa {a['kappa']:.3f}, macro F1 {a['macro_f1']:.3f}</p>")
        out.append("<table id='confusion'><tr><th>reference \\ predicted</th>"
                   + "".join(f"<th>{html.escape(c)}</th>" for c in classes) + "<th>F1</th></tr>"
                   + "".join(f"<tr><td>{html.escape(c)}</td>" + "".join(f"<td>{v}</td>" for v in row)
                             + f"<td>{_fmt(f1)}</td></tr>" for c, row, f1 in zip(classes, a["confusion"], a["f1"]))
                   + "</table>")
    out.append(f"<h2>As text</h2><pre>{html.escape(summary_text(s))}</pre>")
    out.append(f"<p><small>Definitions: see edged/sinks/night.py. Generated by edged.</small></p></body></html>")
    return "\n".join(out)
