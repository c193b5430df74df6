"""The HTML pieces of a run's report: inline CSS, escaped text, tables, figures and the
page around the sections. Plain strings in, plain strings out; no network, no scripts."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Section", "confused_table", "duration", "esc", "img", "kpis", "kv_table", "page",
           "report_table"]

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --card:#fff;
        --accent:#2563eb; --good:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
             Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 60px; }
header.card { background: linear-gradient(135deg, #1e3a8a, #2563eb); color: #fff;
              border: none; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header .sub { opacity: .85; font-size: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
        padding: 22px 26px; margin-bottom: 22px; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr));
        gap: 12px; margin-top: 18px; }
.kpi { background: rgba(255,255,255,.12); border-radius: 10px; padding: 10px 14px; }
.kpi .v { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kpi .k { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; opacity: .85; }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 0 0 22px; }
nav.toc a { color: var(--accent); background: #fff; border: 1px solid var(--line);
            border-radius: 999px; padding: 3px 12px; font-size: 13px; text-decoration: none; }
h2 { margin: 0 0 6px; font-size: 20px; }
h3 { margin: 18px 0 6px; font-size: 15px; color: var(--muted); }
p.how { color: var(--muted); margin: 0 0 14px; max-width: 900px; }
figure { margin: 8px 0 0; text-align: center; }
figure img { max-width: 100%; height: auto; border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.figs { display: flex; flex-wrap: wrap; gap: 10px 24px; justify-content: center;
        align-items: flex-start; }
.figs > figure { flex: 0 1 auto; min-width: 0; }
.cols { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
.cols > * { flex: 1 1 420px; min-width: 0; }
table { border-collapse: collapse; width: 100%; font-size: 14px;
        font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { color: var(--muted); font-weight: 600; font-size: 12px;
           text-transform: uppercase; letter-spacing: .03em; }
tr.sep td { border-top: 2px solid var(--line); }
tr.worst td:first-child { color: var(--bad); font-weight: 600; }
td.bar { width: 28%; }
.bar span { display: block; height: 10px; border-radius: 5px; background: var(--accent); }
table.kv td { text-align: left; }
table.kv td:first-child { color: var(--muted); width: 40%; white-space: nowrap; }
table.kv code { font-size: 13px; }
.note { font-size: 13px; color: var(--muted); }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 30px; }
"""



@dataclass
class Section:
    """One card of the report: its anchor, heading and HTML body."""

    id: str
    title: str
    body: str


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def img(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "–"
    if isinstance(value, dict):
        return json.dumps(value) if value else "–"
    return "–" if value is None or value == "" else str(value)


def kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(fmt_value(v))}</code></td></tr>"
                   for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def report_table(metrics: dict[str, Any]) -> str:
    """The classification report as an HTML table, recall drawn as a bar."""
    per_class = metrics["per_class"]
    avg = ("macro avg", "weighted avg")
    names = [k for k in per_class if k not in avg]
    worst = min(names, key=lambda n: per_class[n]["f1"]) if names else None
    head = ("<thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>support</th><th>recall</th></tr></thead>")

    def row(name: str, r: dict[str, Any], cls: str = "", bar: bool = True) -> str:
        width = f'<span style="width:{100 * r["recall"]:.1f}%"></span>' if bar else ""
        return (f'<tr class="{cls}"><td>{esc(name)}</td><td>{r["precision"]:.4f}</td>'
                f'<td>{r["recall"]:.4f}</td><td>{r["f1"]:.4f}</td><td>{int(r["support"]):,}</td>'
                f'<td class="bar">{width}</td></tr>')

    body = [row(n, per_class[n], "worst" if n == worst else "") for n in names]
    n = int(metrics.get("n", per_class.get("macro avg", {}).get("support", 0)))
    body.append(f'<tr class="sep"><td>accuracy</td><td></td><td></td>'
                f'<td>{metrics["accuracy"]:.4f}</td><td>{n:,}</td><td></td></tr>')
    body += [row(k, per_class[k], bar=False) for k in avg if k in per_class]
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def confused_table(metrics: dict[str, Any]) -> str:
    support = {k: v["support"] for k, v in metrics["per_class"].items()}
    rows = "".join(
        f"<tr><td>{esc(t)}</td><td>{esc(p)}</td><td>{int(c):,}</td>"
        f"<td>{100 * c / max(1, support.get(t, 0)):.1f}%</td></tr>"
        for t, p, c in metrics.get("most_confused", []))
    if not rows:
        return '<p class="note">No mistakes: nothing is confused.</p>'
    return ("<table><thead><tr><th>true class</th><th>predicted as</th><th>count</th>"
            f"<th>of true class</th></tr></thead><tbody>{rows}</tbody></table>")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def kpis(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="kpis">' + "".join(
        f'<div class="kpi"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in items) + "</div>"


def page(title: str, header: str, sections: Sequence[Section], footer: str) -> str:
    """The whole document: head with inline CSS, header card, table of contents, sections."""
    toc = '<nav class="toc">' + "".join(
        f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections) + "</nav>"
    body = "".join(f'<section class="card" id="{s.id}"><h2>{esc(s.title)}</h2>{s.body}'
                   "</section>" for s in sections)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main>{header}{toc}{body}<footer>{footer}</footer></main></body></html>\n")
