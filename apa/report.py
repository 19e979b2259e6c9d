"""The evaluation report: a console table, ``metrics.json``, ``report.md`` and scatter plots.

Plots are drawn with matplotlib's object API on the Agg canvas (no display, no pyplot
state), one PNG per level and aspect with a panel per system.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rich.table import Table

from apa.metrics.correlation import pearson, spearman
from apa.metrics.result import AspectMetrics, Difference, Estimate, Evaluation
from apa.schema import ASPECTS

Pairs = Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]]
"""(level, aspect) -> (human scores, predicted scores) of the joined units."""

_RANGE = {"sentence": 10.0, "word": 10.0, "phone": 2.0}


def _fmt(estimate: Estimate, *, ci: bool = True, signed: bool = False) -> str:
    if estimate.value is None:
        return "undefined"
    sign = "+" if signed else ""
    text = f"{estimate.value:{sign}.3f}"
    if ci and estimate.ci_low is not None and estimate.ci_high is not None:
        text += f" [{estimate.ci_low:{sign}.3f}, {estimate.ci_high:{sign}.3f}]"
    return text


def _by_key(rows: list[AspectMetrics] | list[Difference]) -> dict[tuple[str, str], object]:
    return {(r.level, r.aspect): r for r in rows}


def console_table(evaluation: Evaluation) -> Table:
    """Level × aspect × PCC/SCC/RMSE/n, a column group per system, and the difference."""
    confidence = f"{evaluation.confidence:.0%} CI"
    table = Table(title=f"Agreement with human scores (PCC/SCC with {confidence})")
    table.add_column("level")
    table.add_column("aspect")
    many = len(evaluation.systems) > 1
    for system in evaluation.systems:
        prefix = f"{system.name} " if many else ""
        table.add_column(f"{prefix}PCC", justify="right")
        table.add_column(f"{prefix}SCC", justify="right")
        table.add_column(f"{prefix}RMSE", justify="right")
        table.add_column(f"{prefix}n", justify="right")
    for diff_system in evaluation.systems[1:]:
        table.add_column(f"ΔPCC {evaluation.systems[0].name}−{diff_system.name}", justify="right")
        table.add_column("ΔSCC", justify="right")
    metrics = [_by_key(s.aspects) for s in evaluation.systems]
    differences = [
        _by_key([d for d in evaluation.differences if d.b == s.name])
        for s in evaluation.systems[1:]
    ]
    for level, aspects in ASPECTS.items():
        for aspect in aspects:
            row = [level, aspect]
            for by_key in metrics:
                m = by_key[(level, aspect)]
                row += [_fmt(m.pcc), _fmt(m.scc), _fmt(m.rmse, ci=False), str(m.n)]
            for by_key in differences:
                d = by_key.get((level, aspect))
                row += [_fmt(d.pcc, signed=True), _fmt(d.scc, signed=True)] if d else ["", ""]
            table.add_row(*row)
    return table


def plot_scatter(
    level: str,
    aspect: str,
    pairs_by_system: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
) -> None:
    """Human (x) vs predicted (y) scores of one aspect, a panel per system, to a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_panels = max(len(pairs_by_system), 1)
    fig = Figure(figsize=(4.2 * n_panels, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    top = _RANGE[level]
    for i, (name, (gold, pred)) in enumerate(pairs_by_system.items()):
        ax = fig.add_subplot(1, n_panels, i + 1)
        n = len(gold)
        alpha = float(np.clip(200.0 / max(n, 1), 0.03, 0.8))
        ax.scatter(gold, pred, s=8, alpha=alpha, edgecolors="none")
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlim(-0.05 * top, 1.05 * top)
        ax.set_ylim(-0.05 * top, 1.05 * top)
        ax.set_xlabel("human score")
        ax.set_ylabel("predicted score")
        pcc, scc = pearson(gold, pred).value, spearman(gold, pred).value
        stats = ", ".join(
            f"{label} {value:.2f}"
            for label, value in (("PCC", pcc), ("SCC", scc))
            if value is not None
        )
        ax.set_title(
            f"{name}: {level} {aspect}\nn={n}" + (f", {stats}" if stats else ""), fontsize=10
        )
        ax.set_aspect("equal")
    fig.savefig(path, dpi=100)


def write_report(
    evaluation: Evaluation,
    pairs: Mapping[str, Pairs],
    out_dir: Path,
    *,
    sources: Mapping[str, str],
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` and ``plots/*.png`` into ``out_dir``.

    ``pairs`` maps each system's name to its joined (human, predicted) arrays; ``sources``
    names where each input came from (printed in the report).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(evaluation.model_dump_json(indent=2) + "\n")

    plot_files: dict[tuple[str, str], str] = {}
    for level, aspects in ASPECTS.items():
        for aspect in aspects:
            per_system = {
                name: pairs[name][(level, aspect)]
                for name in pairs
                if (level, aspect) in pairs[name] and len(pairs[name][(level, aspect)][0])
            }
            if not per_system:
                continue
            png = plots / f"{level}_{aspect}.png"
            plot_scatter(level, aspect, per_system, png)
            plot_files[(level, aspect)] = f"plots/{png.name}"

    report_path = out_dir / "report.md"
    report_path.write_text(_markdown(evaluation, plot_files, sources))
    return {"metrics": metrics_path, "report": report_path, "plots": plots}


def _markdown(
    evaluation: Evaluation, plot_files: Mapping[tuple[str, str], str], sources: Mapping[str, str]
) -> str:
    ci = f"{evaluation.confidence:.0%}"
    lines = [
        "# Pronunciation scoring: agreement with human scores",
        "",
        f"Generated {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. "
        f"Intervals are {ci} percentile bootstrap intervals over {evaluation.n_resamples} "
        f"resamples of whole {evaluation.resampling_unit}s (seed {evaluation.seed}).",
        "",
        "## Inputs",
        "",
    ]
    lines += [f"- **{name}**: `{source}`" for name, source in sources.items()]
    for system in evaluation.systems:
        if system.model_is_random:
            lines += [
                "",
                f"> **Warning:** `{system.name}` was produced by a model with random weights "
                "(`model_is_random`); its scores carry no information about pronunciation.",
            ]
    for system in evaluation.systems:
        lines += [
            "",
            f"## {system.name}" + (f" (`{system.model}`)" if system.model else ""),
            "",
            "How predictions met the human scores (nothing is dropped without a count):",
            "",
            "| level | predicted | human | matched | mismatched | predicted only "
            "| human only | duplicates | not estimated | human missing |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for j in system.join:
            lines.append(
                f"| {j.level} | {j.predicted} | {j.gold} | {j.matched} | {j.mismatched} "
                f"| {j.pred_only} | {j.gold_only} | {j.duplicate_predictions} "
                f"| {_counts(j.pred_missing)} | {_counts(j.gold_missing)} |"
            )
        lines += [
            "",
            f"| level | aspect | n | PCC [{ci}] | SCC [{ci}] | Kendall τ [{ci}] | RMSE [{ci}] |",
            "|---|---|---:|---|---|---|---|",
        ]
        for m in system.aspects:
            lines.append(
                f"| {m.level} | {m.aspect} | {m.n} | {_fmt(m.pcc)} | {_fmt(m.scc)} "
                f"| {_fmt(m.kendall)} | {_fmt(m.rmse)} |"
            )
        undefined = [
            f"{m.level} {m.aspect} {name}: {est.undefined}"
            for m in system.aspects
            for name, est in (("PCC", m.pcc), ("SCC", m.scc), ("Kendall", m.kendall))
            if est.undefined
        ]
        if undefined:
            lines += ["", "Undefined metrics:", ""] + [f"- {u}" for u in sorted(set(undefined))]
    if evaluation.differences:
        lines += [
            "",
            "## Differences (paired bootstrap on the units both systems scored)",
            "",
            f"| a − b | level | aspect | n | ΔPCC [{ci}] | ΔSCC [{ci}] | ΔKendall [{ci}] "
            f"| ΔRMSE [{ci}] |",
            "|---|---|---|---:|---|---|---|---|",
        ]
        for d in evaluation.differences:
            lines.append(
                f"| {d.a} − {d.b} | {d.level} | {d.aspect} | {d.n} | {_fmt(d.pcc, signed=True)} "
                f"| {_fmt(d.scc, signed=True)} | {_fmt(d.kendall, signed=True)} "
                f"| {_fmt(d.rmse, signed=True)} |"
            )
    if plot_files:
        lines += ["", "## Human vs predicted", ""]
        for (level, aspect), file in plot_files.items():
            lines += [f"### {level} {aspect}", "", f"![{level} {aspect}]({file})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _counts(counts: Mapping[str, int]) -> str:
    nonzero = {k: v for k, v in counts.items() if v}
    return ", ".join(f"{k} {v}" for k, v in nonzero.items()) or "0"
