#!/usr/bin/env python3
"""Renders bench/results/*.json into the guide's chart and table.

    python3 bench/chart.py            # writes docs/src/images/benchmarks.svg and the
                                      # table in docs/src/benchmarks.md
    python3 bench/chart.py --check    # exits 1 if either is stale (no benchmark runs)

Each results file is what `bench/record.py` wrote for one benchmark (S1…S9): its
measures, each a ratio ours/anchor with a goal (met when the ratio is at most the
goal). The chart is one horizontal bar per measure on a logarithmic axis (ratios run
from a few hundredths to several times the anchor), a goal mark on each bar, green
where the goal is met and red where it is missed. The table goes between the lines
`<!-- results:begin -->` and `<!-- results:end -->` of the guide's page. Both are plain
text made from the JSON alone (no date or machine of their own), so `--check` can tell
whether someone recorded a result without rendering it. Standard library only.
"""

import argparse
import glob
import html
import json
import math
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
MET, MISSED, GOAL, INK, MUTED = "#2e7d32", "#c62828", "#111111", "#222222", "#666666"


def load(results_dir: str) -> list:
    """Every results file, in benchmark order (S1, S2, …, S10; then by name)."""
    docs = []
    for path in glob.glob(os.path.join(results_dir, "*.json")):
        with open(path, encoding="utf-8") as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}: not valid JSON ({e}); record it again with bench/record.py")
        for key in ("id", "workload", "measures"):
            if key not in doc:
                sys.exit(f"{path}: no '{key}'; record it again with bench/record.py")
        docs.append(doc)

    def order(doc):
        m = re.match(r"^([A-Za-z]*)(\d+)(.*)$", doc["id"])
        return (m.group(1), int(m.group(2)), m.group(3)) if m else (doc["id"], 0, "")

    return sorted(docs, key=order)


def rows(docs: list) -> list:
    """One row per measure: (benchmark, measure)."""
    return [(doc, m) for doc in docs for m in doc["measures"]]


def num(v: float) -> str:
    """A figure as a reader wants it: 3 significant digits, thousands separated."""
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if abs(v) >= 0.1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def machine(doc: dict) -> str:
    m = doc.get("machine") or {}
    parts = []
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("memory_gb"):
        parts.append(f"{m['memory_gb']} GB")
    if m.get("cpu") and m["cpu"] != "unknown":
        parts.append(m["cpu"])
    return ", ".join(parts) or "unknown"


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(docs: list) -> str:
    if not docs:
        return "No results recorded yet: run `bench/run_all.sh` (or one benchmark), then `python3 bench/chart.py`.\n"
    out = [
        "| # | workload | measure | ours | anchor | ratio | goal | met | date | commit | machine |",
        "|---|---|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for doc, m in rows(docs):
        out.append("| " + " | ".join(cell(c) for c in (
            doc["id"], doc["workload"], m["name"], num(m["ours"]), num(m["anchor"]),
            f"**{m['ratio']:.2f}**", f"≤ {num(m['goal'])}", "yes" if m["met"] else "**no**",
            doc.get("date", ""), f"`{doc.get('commit', '')}`", machine(doc),
        )) + " |")
    notes = [(doc["id"], n) for doc in docs for n in doc.get("notes", [])]
    if notes:
        out.append("")
        out += [f"- {i}: {cell(n)}" for i, n in notes]
    return "\n".join(out) + "\n"


# A benchmark with more measures than this (S8 has one per list call) is one bar in the
# chart, its worst ratio, so that the chart stays readable; the table lists them all.
MAX_BARS = 6


def bars(docs: list) -> list:
    out = []
    for doc in docs:
        ms = doc["measures"]
        if len(ms) > MAX_BARS:
            worst = max(ms, key=lambda m: m["ratio"] / m["goal"] if m["goal"] else m["ratio"])
            met = sum(1 for m in ms if m["met"])
            out.append((doc, dict(worst, name=f"worst of {len(ms)} ({met} met): {worst['name']}",
                                  met=met == len(ms))))
        else:
            out += [(doc, m) for m in ms]
    return out


def svg(docs: list) -> str:
    data = bars(docs)
    width, label_w, plot_x, plot_w = 1040, 390, 400, 420
    top, row_h, bar_h = 64, 26, 14
    height = top + max(len(data), 1) * row_h + 48
    ratios = [m["ratio"] for _, m in data] + [m["goal"] for _, m in data]
    ratios = [r for r in ratios if r > 0]
    lo = 10 ** math.floor(math.log10(min(ratios + [0.5]) / 1.3))
    hi = 10 ** math.ceil(math.log10(max(ratios + [2.0]) * 1.3))

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return plot_x + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    def text(tx, ty, s, anchor="start", size=12, fill=INK, weight="normal"):
        return (f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}" font-size="{size}" '
                f'fill="{fill}" font-weight="{weight}">{html.escape(s)}</text>')

    met = sum(1 for _, m in rows(docs) if m["met"])
    total = len(rows(docs))
    title = "tablesafe / anchor, per benchmark of issue 28 (lower is better)"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="DejaVu Sans, Verdana, sans-serif">',
        f"<title>{html.escape(title)}: {met} of {total} goals met</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        text(10, 22, title, size=15, weight="bold"),
        # The legend.
        f'<rect x="10" y="34" width="14" height="10" fill="{MET}"/>',
        text(30, 43, "goal met"),
        f'<rect x="100" y="34" width="14" height="10" fill="{MISSED}"/>',
        text(120, 43, "goal missed"),
        f'<rect x="213" y="31" width="3" height="16" fill="{GOAL}"/>',
        text(222, 43, "goal (ratio at most)"),
        text(370, 43, f"{met} of {total} met; logarithmic axis; the dashed line is 1 (as fast / as big as the anchor)",
             fill=MUTED, size=11),
    ]
    if not data:
        out.append(text(10, top + 18, "No results recorded yet (bench/run_all.sh)."))
    # Axis ticks: 1, 2, 5 per decade.
    bottom = top + len(data) * row_h
    decade = lo
    while decade <= hi * 1.0001:
        for k in (1, 2, 5):
            v = decade * k
            if v > hi * 1.0001:
                break
            tx = x(v)
            dash = ' stroke-dasharray="4 3"' if abs(v - 1) < 1e-9 else ""
            stroke = "#888888" if abs(v - 1) < 1e-9 else "#e0e0e0"
            out.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{bottom}" stroke="{stroke}"{dash}/>')
            out.append(text(tx, bottom + 16, f"{num(v)}×", anchor="middle", size=11, fill=MUTED))
        decade *= 10
    previous = None
    band = False
    for i, (doc, m) in enumerate(data):
        y = top + i * row_h
        if doc["id"] != previous:
            band = not band if previous is not None else True
            previous = doc["id"]
        if band:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f4f6f8"/>')
        label = f"{doc['id']} {m['name']}"
        short = label if len(label) <= 56 else label[:55] + "…"
        colour = MET if m["met"] else MISSED
        mid = y + row_h / 2
        tip = "{}: {} / {} = {:.2f} (goal ≤ {}); {}".format(
            label, num(m["ours"]), num(m["anchor"]), m["ratio"], num(m["goal"]), doc["workload"])
        out.append(f"<g><title>{html.escape(tip)}</title>")
        out.append(text(label_w, mid + 4, short, anchor="end"))
        bx = x(m["ratio"])
        out.append(f'<rect x="{plot_x}" y="{mid - bar_h / 2:.1f}" width="{max(bx - plot_x, 2):.1f}" height="{bar_h}" fill="{colour}"/>')
        gx = x(m["goal"])
        out.append(f'<rect x="{gx - 1.5:.1f}" y="{mid - bar_h / 2 - 4:.1f}" width="3" height="{bar_h + 8}" fill="{GOAL}"/>')
        verdict = "met" if m["met"] else "missed"
        out.append(text(plot_x + plot_w + 10, mid + 4,
                        f"{m['ratio']:.2f}× (goal ≤ {num(m['goal'])}, {verdict})",
                        fill=colour, weight="bold" if not m["met"] else "normal"))
        out.append("</g>")
    dates = sorted({doc.get("date", "")[:10] for doc in docs if doc.get("date")})
    machines = sorted({machine(doc) for doc in docs})
    if docs:
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        out.append(text(10, height - 10, f"Measured {when} on {'; '.join(machines)}; each ratio against its anchor in the same run.",
                        size=11, fill=MUTED))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def with_table(doc_text: str, generated: str, doc_path: str) -> str:
    if BEGIN not in doc_text or END not in doc_text:
        sys.exit(f"{doc_path}: no '{BEGIN}' … '{END}' lines to put the table between: add them where the table goes")
    head, rest = doc_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{generated}\n{END}{tail}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results"))
    p.add_argument("--svg", default=os.path.join(ROOT, "docs", "src", "images", "benchmarks.svg"))
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "src", "benchmarks.md"))
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the chart or the table differs from what the results give")
    a = p.parse_args()
    docs = load(a.results)
    with open(a.doc, encoding="utf-8") as f:
        doc_text = f.read()
    want = {a.svg: svg(docs), a.doc: with_table(doc_text, table(docs), a.doc)}
    stale = []
    for path, content in want.items():
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current == content:
            continue
        stale.append(path)
        if not a.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
    rel = [os.path.relpath(s, ROOT) for s in stale]
    if a.check:
        if stale:
            print(f"stale: {', '.join(rel)} (the results in {os.path.relpath(a.results, ROOT)} changed): "
                  "run `python3 bench/chart.py` and commit what it writes", file=sys.stderr)
            return 1
        print(f"chart and table match {len(docs)} results file(s)")
        return 0
    n = sum(len(d["measures"]) for d in docs)
    print(f"{len(docs)} benchmark(s), {n} measure(s): " + (f"wrote {', '.join(rel)}" if rel else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
