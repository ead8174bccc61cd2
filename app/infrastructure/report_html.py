"""The data-quality report as one self-contained HTML page: Plotly charts with plotly.js inside,
so that the file opens with no network (a laptop, an e-mail attachment, an air-gapped site).

The numbers come aggregated from `app.application.report`; this module only draws them.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from app.application.report import READ, QualityReport

#: Colours of the estimate categories and layers, steady from one report to the next.
_CATEGORY_COLOURS = {
    "linear": "#1f77b4",
    "like_day": "#ff7f0e",
    "flat": "#9467bd",
    "register_spread": "#8c564b",
    "estimated by the source": "#7f7f7f",
}
_LAYER_COLOURS = {"bronze": "#cd7f32", "silver": "#8a9597", "gold": "#d4af37"}
_STATUS_COLOURS = {"succeeded": "#2ca02c", "failed": "#d62728", "skipped": "#bcbd22", "running": "#17becf"}
_CONFIG = {"displaylogo": False, "responsive": True}
_LAYOUT: dict[str, Any] = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def render_report(report: QualityReport) -> str:
    """The report as one HTML document."""
    sections = [
        _section(
            "completeness",
            "Completeness per meter and local day",
            _heatmap(report),
            "Share of each local day covered by read (not estimated) intervals, per meter; "
            "dashed lines mark the days the clocks change. The menu sorts the meters worst first or by id.",
        ),
        _section(
            "estimates",
            "Estimated intervals per day and method",
            _estimates(report),
            "Share of the day's silver intervals estimated, by who estimated them and how.",
        ),
        _section("load", "Portfolio load", _load(report), "Hourly energy of all meters, import and export."),
        _section(
            "profile",
            f"Interval profile of meter {report.meter}" if report.meter else "Interval profile",
            _profile(report),
            "The meter's intervals; estimated ones are highlighted. Without --meter, the least complete meter.",
        ),
        _section(
            "quarantine",
            "Quarantined rows per rule and batch",
            _quarantine(report),
            "Rows each batch put in quarantine, by rule.",
            _reasons(report),
        ),
        _section(
            "batches",
            "Batches",
            _timeline(report),
            "Seconds per layer of each batch (newest at the top), rows in and out, and status.",
        ),
    ]
    title = f"Data quality — {report.source or 'all sources'}, {report.first_day} to {report.last_day}"
    return _PAGE.format(
        title=html.escape(title),
        plotly=get_plotlyjs(),
        summary=_summary(report),
        sections="\n".join(sections),
        generated=html.escape(report.generated_at.isoformat(timespec="seconds")),
    )


def _section(anchor: str, heading: str, chart: str, caption: str, extra: str = "") -> str:
    return (
        f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>'
        f'<p class="caption">{html.escape(caption)}</p>{chart}{extra}</section>'
    )


def _figure(figure: go.Figure, name: str) -> str:
    return str(figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}", config=_CONFIG)).replace(
        '<div id="chart-', '<div class="chart" id="chart-', 1
    )


def _empty(what: str) -> str:
    return f'<p class="empty">{html.escape(what)}</p>'


def _heatmap(report: QualityReport) -> str:
    if not report.meters:
        return _empty("No meter-days in gold for these days.")
    worst = report.worst_first()
    by_id = list(range(len(report.meters)))
    days = [d.isoformat() for d in report.days]

    def trace_data(order: list[int]) -> tuple[list[Any], list[str]]:
        z = report.completeness[order]
        return [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in z], [
            report.meters[i] for i in order
        ]

    z_worst, y_worst = trace_data(worst)
    z_id, y_id = trace_data(by_id)
    figure = go.Figure(
        go.Heatmap(
            z=z_worst,
            x=days,
            y=y_worst,
            zmin=0,
            zmax=1,
            colorscale="RdYlGn",
            colorbar={"title": {"text": "complete"}, "tickformat": ".0%"},
            hovertemplate="meter %{y}<br>%{x}<br>complete %{z:.1%}<extra></extra>",
        )
    )
    for day in report.dst_days:
        figure.add_vline(x=day.isoformat(), line_dash="dash", line_color="#333", opacity=0.6)
        figure.add_annotation(x=day.isoformat(), y=1.02, yref="paper", text="DST", showarrow=False)
    height = int(min(900, max(320, 14 * len(report.meters) + 120)))
    figure.update_layout(
        **_LAYOUT,
        height=height,
        yaxis={"type": "category", "autorange": "reversed", "title": "meter"},
        xaxis={"title": "local day"},
        updatemenus=[
            {
                "type": "dropdown",
                "x": 1.0,
                "y": 1.12,
                "xanchor": "right",
                "buttons": [
                    {"label": "Worst first", "method": "restyle", "args": [{"z": [z_worst], "y": [y_worst]}]},
                    {"label": "By meter id", "method": "restyle", "args": [{"z": [z_id], "y": [y_id]}]},
                ],
            }
        ],
    )
    return _figure(figure, "completeness")


def _estimates(report: QualityReport) -> str:
    categories = [c for c in report.intervals if c != READ]
    totals = [sum(v[i] for v in report.intervals.values()) for i in range(len(report.days))]
    if not any(totals):
        return _empty("No silver intervals for these days.")
    days = [d.isoformat() for d in report.days]
    figure = go.Figure()
    for category in categories:
        counts = report.intervals[category]
        shares = [c / t if t else 0.0 for c, t in zip(counts, totals, strict=True)]
        figure.add_trace(
            go.Bar(
                x=days,
                y=shares,
                name=category,
                marker_color=_CATEGORY_COLOURS.get(category),
                customdata=counts,
                hovertemplate="%{x}<br>%{y:.2%} (%{customdata} intervals)<extra>" + category + "</extra>",
            )
        )
    if not categories:  # nothing estimated: the chart still shows the days, at zero
        figure.add_trace(go.Bar(x=days, y=[0.0] * len(days), name="estimated"))
    figure.update_layout(**_LAYOUT, barmode="stack", height=360, yaxis={"tickformat": ".1%", "title": "estimated"})
    return _figure(figure, "estimates")


def _load(report: QualityReport) -> str:
    if not report.load_hours:
        return _empty("No portfolio load in gold for these days.")
    figure = go.Figure()
    for direction, values in report.load.items():
        figure.add_trace(go.Scatter(x=report.load_hours, y=values, mode="lines", name=direction, line={"width": 1.5}))
    figure.update_layout(**_LAYOUT, height=360, yaxis={"title": "kWh per hour"}, xaxis={"title": "hour (UTC)"})
    return _figure(figure, "load")


def _profile(report: QualityReport) -> str:
    profile = report.profile
    if profile is None or profile.num_rows == 0:
        return _empty("No intervals in silver for this meter and these days.")
    figure = go.Figure()
    rows = profile.to_pydict()
    for direction in sorted(set(rows["direction"])):
        mine = [i for i, d in enumerate(rows["direction"]) if d == direction]
        starts = [rows["interval_start_utc"][i] for i in mine]
        values = [rows["energy_kwh"][i] for i in mine]
        figure.add_trace(go.Scatter(x=starts, y=values, mode="lines", name=f"{direction}", line={"width": 1}))
        estimated = [i for i in mine if rows["estimation_method"][i] or rows["quality_flag"][i] == "estimated"]
        if estimated:
            figure.add_trace(
                go.Scatter(
                    x=[rows["interval_start_utc"][i] for i in estimated],
                    y=[rows["energy_kwh"][i] for i in estimated],
                    mode="markers",
                    name=f"{direction}: estimated",
                    marker={"color": "#d62728", "size": 6, "symbol": "diamond"},
                    customdata=[rows["estimation_method"][i] or "by the source" for i in estimated],
                    hovertemplate="%{x}<br>%{y:.4f} kWh<br>estimated: %{customdata}<extra></extra>",
                )
            )
    figure.update_layout(**_LAYOUT, height=380, yaxis={"title": "kWh per interval"}, xaxis={"title": "UTC"})
    return _figure(figure, "profile")


def _quarantine(report: QualityReport) -> str:
    if not report.quarantine:
        return _empty("Nothing quarantined in these batches.")
    batches = sorted({(r["started_at"], r["batch_id"]) for r in report.quarantine})
    labels = [f"{started[:19].replace('T', ' ')} {batch[:8]}" for started, batch in batches]
    index = {batch: i for i, (_, batch) in enumerate(batches)}
    figure = go.Figure()
    for rule in sorted({r["rule"] for r in report.quarantine}):
        counts = [0] * len(batches)
        for r in report.quarantine:
            if r["rule"] == rule:
                counts[index[r["batch_id"]]] += r["rows"]
        figure.add_trace(go.Bar(x=labels, y=counts, name=rule))
    figure.update_layout(**_LAYOUT, barmode="stack", height=380, yaxis={"title": "rows"}, xaxis={"title": "batch"})
    return _figure(figure, "quarantine")


def _reasons(report: QualityReport) -> str:
    if not report.top_reasons:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(r['rule'])}</td><td class='n'>{r['rows']:,}</td>"
        f"<td><code>{html.escape(r['example'] or '')}</code></td></tr>"
        for r in report.top_reasons
    )
    return f"<h3>Top reasons</h3><table><tr><th>rule</th><th>rows</th><th>example</th></tr>{rows}</table>"


def _timeline(report: QualityReport) -> str:
    if not report.batches:
        return _empty("No batches recorded.")
    batches = list(reversed(report.batches))  # oldest at the bottom
    labels = [f"{b.started_at:%Y-%m-%d %H:%M:%S} {b.batch_id[:8]}" for b in batches]
    figure = go.Figure()
    layers = [name for name in ("bronze", "silver", "gold") if any(m.layer == name for b in batches for m in b.layers)]
    for layer in layers:
        seconds, hover = [], []
        for b in batches:
            metric = next((m for m in b.layers if m.layer == layer), None)
            seconds.append(metric.duration_seconds if metric else 0.0)
            hover.append(
                f"{metric.records_in:,} rows in, {metric.records_out:,} out, {metric.quarantined:,} quarantined"
                if metric
                else "not run"
            )
        figure.add_trace(
            go.Bar(
                y=labels,
                x=seconds,
                orientation="h",
                name=layer,
                marker_color=_LAYER_COLOURS.get(layer),
                customdata=hover,
                hovertemplate="%{y}<br>%{x:.2f} s<br>%{customdata}<extra>" + layer + "</extra>",
            )
        )
    figure.add_trace(
        go.Scatter(
            y=labels,
            x=[0.0] * len(batches),
            mode="markers",
            name="status",
            marker={"color": [_STATUS_COLOURS.get(b.status, "#333") for b in batches], "size": 9, "symbol": "square"},
            customdata=[f"{b.status}, {b.kind}, {b.record_count:,} rows read" for b in batches],
            hovertemplate="%{y}<br>%{customdata}<extra>status</extra>",
        )
    )
    height = int(min(1200, max(320, 22 * len(batches) + 120)))
    figure.update_layout(
        **_LAYOUT, barmode="stack", height=height, xaxis={"title": "seconds"}, yaxis={"type": "category"}
    )
    return _figure(figure, "batches")


def _summary(report: QualityReport) -> str:
    numbers = report.summary()
    completeness = numbers["completeness"]["mean"]
    estimated = sum(v for k, v in numbers["estimates"]["by_category"].items() if k != READ)
    intervals = sum(numbers["estimates"]["by_category"].values())
    failed = sum(1 for b in report.batches if b.status == "failed")
    cards = [
        ("meters", f"{numbers['meters']:,}"),
        ("days", f"{len(report.days):,}"),
        ("mean completeness", f"{completeness:.1%}" if completeness is not None else "–"),
        ("estimated intervals", f"{estimated / intervals:.2%}" if intervals else "–"),
        ("quarantined rows", f"{numbers['quarantine']['rows']:,}"),
        ("batches (failed)", f"{len(report.batches):,} ({failed:,})"),
        ("clock changes", ", ".join(d.isoformat() for d in report.dst_days) or "none"),
    ]
    return "".join(
        f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in cards
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 16px; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.2rem; margin-top: 2rem; }} h3 {{ font-size: 1rem; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }}
.card .v {{ font-size: 1.3rem; font-weight: 600; }} .card .k {{ color: #666; font-size: .85rem; }}
.caption {{ color: #555; }} .empty {{ color: #888; font-style: italic; }}
table {{ border-collapse: collapse; font-size: .85rem; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; }}
td.n {{ text-align: right; }} code {{ white-space: pre-wrap; word-break: break-all; }}
nav a {{ margin-right: 12px; }}
</style>
<script type="text/javascript">{plotly}</script>
</head>
<body>
<h1>{title}</h1>
<nav><a href="#completeness">Completeness</a><a href="#estimates">Estimates</a><a href="#load">Load</a>
<a href="#profile">Meter</a><a href="#quarantine">Quarantine</a><a href="#batches">Batches</a></nav>
<div class="cards">{summary}</div>
{sections}
<p class="caption">Generated {generated} by energy-platform.</p>
</body>
</html>
"""
