"""Figures, their rows of samples, statistics, ratios, the issue's targets, and the report."""

import json
import statistics
from dataclasses import asdict, dataclass, field

OK, NA, FAILED = "ok", "n/a", "failed"


@dataclass
class Row:
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    sfts: bool = False
    compare: list = field(default_factory=list)  # keys of peers in the same figure
    samples: list = field(default_factory=list)
    status: str = OK
    note: str = ""
    extra: dict = field(default_factory=dict)

    def median(self):
        return statistics.median(self.samples) if self.samples else None

    def fail(self, note):
        self.status, self.note = FAILED, note

    def na(self, note="not implemented"):
        self.status, self.note = NA, note


@dataclass
class Figure:
    number: str
    title: str
    note: str = ""
    rows: list = field(default_factory=list)

    def row(self, key, label, unit, better="higher", sfts=False, compare=()):
        r = Row(key, label, unit, better, sfts, list(compare))
        self.rows.append(r)
        return r

    def get(self, key):
        for r in self.rows:
            if r.key == key:
                return r
        return None


def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("GB/s",):
        return f"{v:.3f}" if v < 1 else f"{v:.2f}"
    if unit in ("ms",):
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    if unit in ("s", "CPU s/GiB"):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if unit == "MiB":
        return f"{v:.1f}"
    if unit == "threads":
        return f"{v:.0f}"
    return f"{v:.3g}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


class Report:
    def __init__(self, meta):
        self.meta = meta
        self.figures = []

    def figure(self, number, title, note=""):
        f = Figure(number, title, note)
        self.figures.append(f)
        return f

    def find(self, fig, key):
        for f in self.figures:
            if f.number == fig:
                return f.get(key)
        return None

    def failures(self):
        return [(f.number, r) for f in self.figures for r in f.rows if r.status == FAILED]

    # -- rendering ---------------------------------------------------------------------

    def table(self):
        out = []
        for f in self.figures:
            out.append(f"### Figure {f.number}: {f.title}")
            if f.note:
                out.append("")
                out.append(f.note)
            out.append("")
            out.append("| tool | unit | median | min–max | n | SFTS ÷ peer (same run) |")
            out.append("|---|---|---:|---:|---:|---|")
            for r in f.rows:
                if r.status == OK and r.samples:
                    med = fmt(r.median(), r.unit)
                    rng = f"{fmt(min(r.samples), r.unit)}–{fmt(max(r.samples), r.unit)}"
                else:
                    med = "n/a (not implemented)" if r.status == NA else r.status.upper()
                    rng = ""
                ratios = []
                if r.status == OK:
                    for k in r.compare:
                        p = f.get(k)
                        q = ratio(r.median(), p.median()) if p and p.status == OK else None
                        if q is not None:
                            ratios.append(f"{q:.2f}× {p.label}")
                note = ""
                if r.note and r.status != OK:
                    note = f" ({r.note})"
                elif r.note:
                    note = f" — {r.note}"
                arrow = "↑" if r.better == "higher" else "↓"
                name = f"**{r.label}**" if r.sfts else r.label
                cells = [f"{name}{note}", f"{r.unit} {arrow}", med, rng, str(len(r.samples)),
                         ", ".join(ratios)]
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            out.append("")
        return "\n".join(out)

    def targets_table(self, targets):
        out = ["### Targets of issue 6", "", "| target | measured | verdict |", "|---|---|---|"]
        for t in targets:
            measured, verdict = t.evaluate(self)
            out.append(f"| {t.text} | {measured.replace('|', chr(92) + '|')} | {verdict} |")
        out.append("")
        return "\n".join(out)

    def to_json(self, targets):
        def row(r):
            d = asdict(r)
            d["median"] = r.median()
            d["min"] = min(r.samples) if r.samples else None
            d["max"] = max(r.samples) if r.samples else None
            return d

        return json.dumps(
            {
                "meta": self.meta,
                "figures": [
                    {"number": f.number, "title": f.title, "note": f.note,
                     "rows": [row(r) for r in f.rows]}
                    for f in self.figures
                ],
                "targets": [
                    dict(zip(("text", "measured", "verdict"), (t.text, *t.evaluate(self))))
                    for t in targets
                ],
            },
            indent=1,
        )


@dataclass
class Target:
    """One target of the issue: `fig/key` compared with `fig/peer` (a ratio) or a bound.

    op is "ge" or "le"; with peer None, the median itself is compared with `bound`.
    With keys as a list, the best OK row among them is used (e.g. the fastest mode).
    """

    text: str
    fig: str
    keys: list
    op: str
    bound: float
    peer: tuple = None  # (fig, key)
    unit: str = ""

    def evaluate(self, report):
        rows = [report.find(self.fig, k) for k in self.keys]
        rows = [r for r in rows if r is not None]
        if not rows:
            return "figure not run", "not measured"
        ok_rows = [r for r in rows if r.status == OK and r.samples]
        if not ok_rows:
            if any(r.status == FAILED for r in rows):
                return "failed", "not measured"
            return "n/a (not implemented)", "not measured"
        best = max(ok_rows, key=lambda r: r.median() * (1 if r.better == "higher" else -1))
        value = best.median()
        if self.peer:
            p = report.find(*self.peer)
            if p is None or p.status != OK or not p.samples:
                return "peer not measured", "not measured"
            value = ratio(best.median(), p.median())
            if value is None:
                return f"{p.label} measured 0: no ratio", "not measured"
            shown = f"{value:.2f}× {p.label}"
        else:
            shown = f"{fmt(value, best.unit)} {best.unit}"
        if len(self.keys) > 1:
            shown += f" ({best.label})"
        met = value >= self.bound if self.op == "ge" else value <= self.bound
        return shown, ("met" if met else "missed")
