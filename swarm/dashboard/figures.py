"""The dashboard's charts, built with plotly from the run's table of experiments (swarm.table).

Each function returns a plotly figure as a JSON-able dict (`Figure.to_plotly_json()`) that the page
hands to `Plotly.react`. Times are shown in the server's local time. Every string that came from
an agent, a log or a model (descriptions, agent and worker names) goes through `esc` first: plotly
renders a small subset of HTML in texts, legends and hovers, and an escaped string is shown as the
literal text instead. Not covered: the tables and numbers beside the charts (swarm.dashboard.snapshot).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Iterable

import pandas as pd
import plotly.graph_objects as go

from swarm.table import RunTable

STATUS_COLOURS = {
    "keep": "#2ca02c", "discard": "#9e9e9e", "pending": "#ff9f1c", "crash": "#d62728", "timeout": "#8c1d18",
    "invalid": "#9467bd", "rejected": "#8c564b", "duplicate": "#c7c7c7", "interrupted": "#444444",
    "running": "#1f77b4",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")
GREY = "#b8b8b8"
LABEL_CHARS = 28  # kept points carry this much of their description on the chart (all of it in the hover)


def esc(text: Any) -> str:
    """`text` as plotly shows it literally: its pseudo-HTML (<b>, <a href>, <br>, ...) escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def when(seconds: Iterable[float]) -> list[str]:
    """Unix seconds as local date-time strings for a plotly date axis."""
    zone = _dt.datetime.now().astimezone().tzinfo
    stamps = pd.to_datetime(pd.Series(list(seconds), dtype="float64"), unit="s", utc=True).dt.tz_convert(zone)
    return [s.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] for s in stamps]


def natural(names: Iterable[str]) -> list[str]:
    """Worker names in their natural order (w2 before w10)."""
    return sorted(set(names), key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def colours(names: Iterable[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _layout(fig: go.Figure, *, y_title: str = "", height: int = 420, right: int = 30, **extra: Any) -> dict[str, Any]:
    fig.update_layout(
        template="none", height=height, margin=dict(l=70, r=right, t=40, b=50), paper_bgcolor="white",
        plot_bgcolor="white", font=dict(family="system-ui, sans-serif", size=12), hovermode="closest",
        legend=dict(orientation="h", x=0, y=1.02, xanchor="left", yanchor="bottom"), uirevision="keep", **extra)
    fig.update_xaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    fig.layout.yaxis.title.text = y_title
    return fig.to_plotly_json()


def _hover(rows: pd.DataFrame, metric_name: str) -> list[str]:
    return [f"#{r.exp_id} {esc(r.status)} ({esc(r.kind)}), {esc(r.worker)} / {esc(r.agent)}<br>"
            f"{metric_name} {r.metric:.6f}<br>{esc(r.description)}" for r in rows.itertuples(index=False)]


def progress(table: RunTable, end_t: float) -> dict[str, Any]:
    """Every measured experiment over time (kept ones coloured by agent and labelled, the rest grey)
    and each lane's best as a step line with its +-2 sigma noise band."""
    df, metric = table.experiments, table.metric
    fig = go.Figure()
    sigma = table.state.noise_model().sigma
    bests = table.bests.sort_values("t", kind="stable")
    lane_colour = colours(bests["lane"]) if table.state.compare else {}
    for lane, b in bests.groupby("lane", sort=True):
        xs, ys = [*b["t"], max(end_t, float(b["t"].iloc[-1]))], [*b["metric"], float(b["metric"].iloc[-1])]
        name = f"best ({esc(lane)})" if table.state.compare else "best"
        colour = lane_colour.get(lane, "#111111")
        if sigma:
            fig.add_scatter(x=when(xs), y=[y - 2 * sigma for y in ys], mode="lines", line=dict(width=0, shape="hv"),
                            hoverinfo="skip", showlegend=False)
            fig.add_scatter(x=when(xs), y=[y + 2 * sigma for y in ys], mode="lines", line=dict(width=0, shape="hv"),
                            fill="tonexty", fillcolor="rgba(0,0,0,0.08)", hoverinfo="skip",
                            name=f"±2σ noise (σ {sigma:.2g})", showlegend=lane == bests["lane"].iloc[0])
        fig.add_scatter(x=when(xs), y=ys, mode="lines", line=dict(color=colour, width=2, shape="hv"), name=name,
                        hovertemplate=f"{name} %{{y:.6f}}<extra></extra>")
    measured = df[df["metric"].notna()]
    kept_mask = (measured["status"] == "keep") & measured["kind"].isin(("proposal", "combination"))
    other = measured[~kept_mask]
    fig.add_scatter(x=when(other["finished_at"]), y=other["metric"].tolist(), mode="markers", name="discarded / other",
                    marker=dict(color=GREY, size=7, line=dict(width=0)), customdata=other["exp_id"].tolist(),
                    hovertext=_hover(other, metric), hoverinfo="text", meta="experiments")
    agent_colour = colours(df["agent"])
    for agent, kept in measured[kept_mask].groupby("agent", sort=True):
        labels = [esc(d if len(d) <= LABEL_CHARS else d[: LABEL_CHARS - 1] + "…") for d in kept["description"]]
        fig.add_scatter(x=when(kept["finished_at"]), y=kept["metric"].tolist(), mode="markers+text", name=f"kept: {esc(agent)}",
                        marker=dict(color=agent_colour[agent], size=12, line=dict(color="white", width=1)),
                        text=labels, textposition="top left", textfont=dict(size=10), customdata=kept["exp_id"].tolist(),
                        hovertext=_hover(kept, metric), hoverinfo="text", meta="experiments")
    direction = "lower" if table.direction == "min" else "higher"
    return _layout(fig, y_title=f"{metric} ({direction} is better)")


def timeline(table: RunTable, now: float) -> dict[str, Any]:
    """A Gantt chart: one row per worker, each experiment a bar from its start to its end, by status."""
    done = table.experiments[["exp_id", "worker", "agent", "kind", "status", "description", "started_at", "finished_at"]]
    running = table.running.assign(status="running", finished_at=now)[list(done.columns)]
    bars = pd.concat([done, running], ignore_index=True) if not running.empty else done
    workers = natural(bars["worker"])
    fig = go.Figure()
    for status, g in bars.groupby("status", sort=True):
        starts = g["started_at"].where(g["started_at"] > 0, g["finished_at"])
        ms = ((g["finished_at"] - starts).clip(lower=0) * 1000).tolist()
        hover = [f"#{r.exp_id} {esc(r.status)} ({esc(r.kind)}) on {esc(r.worker)}, {(r.finished_at - s):.0f} s<br>"
                 f"{esc(r.description)}" for r, s in zip(g.itertuples(index=False), starts)]
        fig.add_bar(y=[esc(w) for w in g["worker"]], x=ms, base=when(starts), orientation="h", name=esc(status),
                    marker=dict(color=STATUS_COLOURS.get(status, GREY), line=dict(color="white", width=0.5)),
                    customdata=g["exp_id"].tolist(), hovertext=hover, hoverinfo="text", meta="experiments")
    rows = [esc(w) for w in workers[::-1]]  # the axis' labels are plotly pseudo-HTML too
    return _layout(fig, y_title="worker", height=140 + 34 * max(1, len(workers)), barmode="overlay",
                   xaxis=dict(type="date"), yaxis=dict(categoryorder="array", categoryarray=rows))


def lineage(table: RunTable) -> dict[str, Any]:
    """The best branch's promotions over time; merges of parallel wins (combinations) are stars."""
    adv = table.bests[table.bests["event"] == "best_advanced"]
    kinds = dict(zip(table.experiments["exp_id"], table.experiments["kind"]))
    fig = go.Figure()
    lane_colour = colours(adv["lane"])
    for lane, g in adv.groupby("lane", sort=True):
        kind = ["baseline" if pd.isna(e) else kinds.get(int(e), "proposal") for e in g["exp_id"]]
        symbols = ["square" if k == "baseline" else "star" if k == "combination" else "circle" for k in kind]
        labels = ["base" if pd.isna(e) else f"#{int(e)}" for e in g["exp_id"]]
        fig.add_scatter(x=when(g["t"]), y=g["metric"].tolist(), mode="lines+markers+text", text=labels,
                        textposition="top center", name=esc(lane), line=dict(shape="hv", color=lane_colour[lane]),
                        marker=dict(symbol=symbols, size=[16 if s == "star" else 10 for s in symbols]),
                        hovertext=[f"{lab} ({k}) {m:.6f}" for lab, k, m in zip(labels, kind, g["metric"])],
                        hoverinfo="text")
    return _layout(fig, y_title=f"best {table.metric}", height=360)


def curves(rows: Iterable[Any], baseline: float | None, metric: str, by: str) -> dict[str, Any]:
    """Each group's best over time (minutes since the run started), as step lines."""
    fig = go.Figure()
    rows = list(rows)
    palette = colours(r.group for r in rows)
    end = max((t for r in rows for t, _ in r.curve), default=0.0)
    for r in rows:
        if not r.curve:
            continue
        xs = [t / 60 for t, _ in r.curve] + [end / 60]
        ys = [m for _, m in r.curve] + [r.curve[-1][1]]
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", line=dict(shape="hv", color=palette[r.group]),
                        name=f"{esc(r.group)} ({r.experiments} exps)")
    if baseline is not None:
        fig.add_hline(y=baseline, line=dict(color="grey", dash="dot", width=1), annotation_text="baseline")
    fig.update_xaxes(title_text="minutes since the run started")
    return _layout(fig, y_title=f"best {metric} by {by}", height=360)


def cost(table: RunTable, max_cost: float | None) -> dict[str, Any]:
    """The agents' summed cost (dollars) and tokens over time, against --max-cost when it is set."""
    spent = pd.concat([
        table.experiments[["finished_at", "cost_usd", "tokens"]].rename(columns={"finished_at": "t"}),
        table.agent_errors.assign(tokens=table.agent_errors["tokens_in"] + table.agent_errors["tokens_out"])[
            ["t", "cost_usd", "tokens"]],
    ], ignore_index=True).sort_values("t", kind="stable")
    xs = when(spent["t"])
    fig = go.Figure()
    fig.add_scatter(x=xs, y=spent["cost_usd"].cumsum().tolist(), mode="lines", line=dict(shape="hv", color="#d62728"),
                    name="cost ($)")
    fig.add_scatter(x=xs, y=spent["tokens"].cumsum().tolist(), mode="lines", yaxis="y2", name="tokens",
                    line=dict(shape="hv", color="#1f77b4", dash="dot"))
    if max_cost:
        fig.add_hline(y=max_cost, line=dict(color="black", dash="dash", width=1),
                      annotation_text=f"--max-cost ${max_cost:g}")
    return _layout(fig, y_title="dollars", height=360, right=80,
                   yaxis2=dict(title=dict(text="tokens"), overlaying="y", side="right", showgrid=False))
