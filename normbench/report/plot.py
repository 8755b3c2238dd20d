"""``normbench plot``: PNGs of a run (and optionally a second run overlaid). Pure: no torch.

Kernel stages: one file per group of cases that differ only in ``num_tokens``
(e.g. ``hidden_size=4096, dtype=bfloat16, residual=False``), two panels:

* time per call (µs, median; the band is the p20-p80 of the samples) against
  ``num_tokens``, log-log;
* bandwidth (GB/s: the bytes-moved model over the median time) against
  ``num_tokens`` (log x), with the device-to-device copy bandwidth measured with
  the run (``environment["peak_bandwidth_gbps"]``) drawn as the ceiling.

One line per provider, in the same colour in every file; ``vs`` overlays the
second run's lines dashed in the same colours.

End-to-end stages: one file per stage, one panel per (non-derived) metric,
bars per variant (grouped by point, e.g. ``input_len``), with intervals: the
95% Wilson interval of accuracy for gsm8k cases with per-item results, the
95% percentile-bootstrap interval of the median over repeats otherwise, none
for a single repeat. ``vs`` adds the second run's bars, hatched.

matplotlib is imported inside the functions (Agg canvas, no pyplot state):
``normbench`` starts without it, and a missing install is a clear error.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from normbench import stats
from normbench.report import varying_axes
from normbench.compare import env_get
from normbench.report.labels import HIDDEN_PARAMS, params_text
from normbench.errors import NormbenchError
from normbench.store import CaseRecord, RunRecord

DPI = 110
DASHED = (0, (5, 3))


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the install
        raise NormbenchError("plot needs matplotlib: pip install 'normbench[plot]'") from e
    matplotlib.rcParams.update({"font.size": 9, "axes.titlesize": 10})
    return Figure


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "plot"


def _short(run: RunRecord) -> str:
    return run.run_id


def _ok_groups(run: RunRecord, stage: str) -> dict[str, list[CaseRecord]]:
    """Fingerprint -> its OK repeats, for one stage."""
    out: dict[str, list[CaseRecord]] = defaultdict(list)
    for c in run.cases:
        if c.stage == stage and c.status == "OK":
            out[c.fingerprint].append(c)
    return out


def _pooled(cases: list[CaseRecord], name: str) -> list[float]:
    ms = [c.metrics[name] for c in cases if name in c.metrics]
    if any(m.samples for m in ms):
        return [float(x) for m in ms for x in m.samples]
    return [float(m.value) for m in ms if m.value is not None]


def _stages(run: RunRecord, kind: str | None = None) -> list[str]:
    out = []
    for c in run.cases:
        if c.stage not in out and (kind is None or (c.kind == "kernel") == (kind == "kernel")):
            out.append(c.stage)
    return out


# --------------------------------------------------------------------------- kernel
def _kernel_series(run: RunRecord, stage: str) -> dict[tuple, dict[str, list[tuple[int, float, float, float, float | None]]]]:
    """group key -> provider -> sorted [(num_tokens, median us, p20, p80, GB/s)]."""
    series: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for cases in _ok_groups(run, stage).values():
        c0 = cases[0]
        if "num_tokens" not in c0.params:
            continue
        key = tuple((k, v) for k, v in c0.params.items() if k != "num_tokens")
        t = _pooled(cases, "time_us")
        if not t:
            continue
        med = stats.median(t)
        sp = stats.spread(t)
        bw_name = next((n for n, m in c0.metrics.items() if m.unit == "GB/s"), None)
        bw = None
        if bw_name:
            vals = _pooled(cases, bw_name)
            bw = stats.median(vals) if vals else None
        series[key][c0.provider or "-"].append((int(c0.params["num_tokens"]), med, sp["p20"], sp["p80"], bw))
    for by_p in series.values():
        for pts in by_p.values():
            pts.sort()
    return series


def _group_title(key: tuple) -> str:
    """``hidden_size=4096, dtype=bfloat16, residual=False``: the group's params (``labels.params_text``)."""
    return params_text(key, hide=HIDDEN_PARAMS)


def kernel_figures(run: RunRecord, vs: RunRecord | None = None) -> list[tuple[str, Any]]:
    """``[(file name, Figure)]`` for every kernel stage and group of ``run``.

    Lines carry labels: ``<provider>`` for ``run`` and ``<provider> (<vs run id>)``
    for the overlay; the ceiling line is labelled ``copy bandwidth``.
    """
    Figure = _matplotlib()
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    out = []
    peak = env_get(run.environment, "peak_bandwidth_gbps")
    vs_peak = env_get(vs.environment, "peak_bandwidth_gbps") if vs is not None else None
    for stage in _stages(run, "kernel"):
        series = _kernel_series(run, stage)
        vs_series = _kernel_series(vs, stage) if vs is not None else {}
        providers: list[str] = []
        for by_p in (*series.values(), *vs_series.values()):
            for p in by_p:
                if p not in providers:
                    providers.append(p)
        colours = {p: f"C{i % 10}" for i, p in enumerate(providers)}
        op = next((c.op for c in run.cases if c.stage == stage and c.op), stage)
        for key in list(dict.fromkeys([*series, *vs_series])):
            fig = Figure(figsize=(13, 4.8), dpi=DPI, layout="constrained")
            ax_t, ax_b = fig.subplots(1, 2)
            drawn: list[str] = []
            for source, data, style in ((run, series.get(key, {}), "-"), (vs, vs_series.get(key, {}), DASHED)):
                if source is None:
                    continue
                suffix = "" if source is run else f" ({_short(source)})"
                for p, pts in data.items():
                    if p not in drawn:
                        drawn.append(p)
                    x = [pt[0] for pt in pts]
                    ax_t.plot(x, [pt[1] for pt in pts], linestyle=style, marker="o", markersize=3,
                              color=colours[p], label=f"{p}{suffix}")
                    if source is run and len(pts) > 1:
                        ax_t.fill_between(x, [pt[2] for pt in pts], [pt[3] for pt in pts], color=colours[p],
                                          alpha=0.15, linewidth=0)
                    bw = [(pt[0], pt[4]) for pt in pts if pt[4] is not None]
                    if bw:
                        ax_b.plot([b[0] for b in bw], [b[1] for b in bw], linestyle=style, marker="o",
                                  markersize=3, color=colours[p], label=f"{p}{suffix}")
            ceilings = [(peak, "black", _short(run))]
            if vs is not None and isinstance(vs_peak, (int, float)) and isinstance(peak, (int, float)) \
                    and abs(vs_peak / peak - 1) > 0.01:
                ceilings.append((vs_peak, "grey", _short(vs)))
            for value, colour, who in ceilings:
                if isinstance(value, (int, float)) and value > 0:
                    ax_b.axhline(value, color=colour, linestyle=":", linewidth=1.3,
                                 label=f"copy bandwidth {value:,.0f} GB/s" + (f" ({who})" if len(ceilings) > 1 else ""))
                    ax_b.annotate(f"copy {value:,.0f} GB/s", xy=(0.01, value), xycoords=("axes fraction", "data"),
                                  xytext=(0, 3), textcoords="offset points", fontsize=7, color=colour)
            plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
            for ax in (ax_t, ax_b):
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(plain)
                ax.set_xlabel("num_tokens")
                ax.grid(True, which="both", alpha=0.3)
            ax_t.set_yscale("log")
            ax_t.yaxis.set_major_formatter(plain)
            ax_t.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
            ax_t.set_ylabel("time per call (µs; median, band p20-p80)")
            ax_b.set_ylabel("bandwidth (GB/s)")
            ax_b.set_ylim(bottom=0)
            ax_t.set_title("time (lower is better)")
            ax_b.set_title("bandwidth (higher is better)")
            handles = [Line2D([], [], color=colours[p], marker="o", markersize=3, label=p) for p in drawn]
            if vs is not None:
                handles += [Line2D([], [], color="black", linestyle="-", label=f"{_short(run)}"),
                            Line2D([], [], color="black", linestyle=DASHED, label=f"{_short(vs)}")]
            if any(isinstance(v, (int, float)) and v > 0 for v, _, _ in ceilings):
                handles.append(Line2D([], [], color="black", linestyle=":", label="copy bandwidth"))
            fig.legend(handles=handles, loc="outside right upper", fontsize=8)
            head = f"{stage}: {op} · {_group_title(key)}"
            sub = _short(run) + (f" (solid) vs {_short(vs)} (dashed)" if vs is not None else "")
            gpu = env_get(run.environment, "gpu.name") or env_get(run.environment, "cpu") or ""
            fig.suptitle(head + (f" · {gpu}" if gpu else "") + f"\n{sub}", fontsize=10)
            out.append((f"{_slug(stage)}__{_slug(_group_title(key))}.png", fig))
    return out


# --------------------------------------------------------------------------- end to end
def _e2e_value(cases: list[CaseRecord], name: str) -> tuple[float, float, float] | None:
    """(value, low, high) of a metric over the repeats of one case."""
    vals = [float(c.metrics[name].value) for c in cases if name in c.metrics and c.metrics[name].value is not None]
    if not vals:
        return None
    field = "strict" if "strict" in name else "flexible" if "flexible" in name else None
    if field:
        for c in sorted(cases, key=lambda c: c.repeat):
            items = [i for i in c.items or [] if i.get(field) is not None]
            if items:
                k = sum(int(i[field]) for i in items)
                _, lo, hi = stats.proportion_interval(k, len(items))
                return stats.median(vals), lo, hi
    return stats.median_interval(vals)


def e2e_figures(run: RunRecord, vs: RunRecord | None = None) -> list[tuple[str, Any]]:
    """``[(file name, Figure)]``: one per end-to-end stage, bars per variant with intervals."""
    Figure = _matplotlib()
    out = []
    for stage in _stages(run, "e2e"):
        runs = [r for r in (run, vs) if r is not None]
        groups = [(r, _ok_groups(r, stage)) for r in runs]
        metrics: list[str] = []
        units: dict[str, tuple[str, bool]] = {}
        variants: list[str] = []
        points: list[tuple] = []
        varying = varying_axes(c.params for _, g in groups for cs in g.values() for c in cs)
        for _, g in groups:
            for cs in g.values():
                c0 = cs[0]
                if (c0.variant or "-") not in variants:
                    variants.append(c0.variant or "-")
                pt = tuple((k, c0.params.get(k)) for k in varying)
                if pt not in points:
                    points.append(pt)
                for name, m in c0.metrics.items():
                    if not m.derived_from and name not in metrics:
                        metrics.append(name)
                        units[name] = (m.unit, m.higher_is_better)
        if not metrics:
            continue
        ncols = min(3, len(metrics))
        nrows = math.ceil(len(metrics) / ncols)
        fig = Figure(figsize=(4.6 * ncols, 3.8 * nrows), dpi=DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        colours = {v: f"C{i % 10}" for i, v in enumerate(variants)}
        nbars = len(variants) * len(runs)
        width = 0.8 / max(nbars, 1)
        legend: dict[str, Any] = {}
        for ax, name in zip(axes, metrics):
            for xi, pt in enumerate(points):
                j = 0
                for ri, (r, g) in enumerate(groups):
                    for v in variants:
                        cases = [cs for cs in g.values()
                                 if (cs[0].variant or "-") == v and tuple((k, cs[0].params.get(k)) for k in varying) == pt]
                        x = xi - 0.4 + width * (j + 0.5)
                        j += 1
                        if not cases:
                            continue
                        res = _e2e_value(cases[0], name)
                        if res is None:
                            continue
                        val, lo, hi = res
                        yerr = None
                        if math.isfinite(lo) and math.isfinite(hi):
                            yerr = [[max(val - lo, 0.0)], [max(hi - val, 0.0)]]
                        label = v if ri == 0 else f"{v} ({_short(r)})"
                        bars = ax.bar([x], [val], width=width * 0.95, color=colours[v], yerr=yerr, capsize=3,
                                      hatch="//" if ri else None, alpha=0.6 if ri else 0.9,
                                      edgecolor="black" if ri else None, label=label)
                        ax.bar_label(bars, labels=[_fmt(val)], label_type="center", fontsize=7)
                        if label not in legend:
                            legend[label] = bars
            ax.set_xticks(range(len(points)))
            ax.set_xticklabels([params_text(pt) or stage for pt in points], fontsize=8)
            unit, hib = units[name]
            ax.set_title(f"{name}\n({'higher' if hib else 'lower'} is better)", fontsize=9)
            ax.set_ylabel(unit or "value")
            ax.grid(True, axis="y", alpha=0.3)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize=8,
                   ncols=min(len(legend), 4))
        sub = _short(run) + (f" (solid) vs {_short(vs)} (hatched)" if vs is not None else "")
        kind = next(c.kind for c in run.cases if c.stage == stage)
        fig.suptitle(f"{stage}: {kind} · bars: median over repeats, intervals 95%\n{sub}", fontsize=10)
        out.append((f"{_slug(stage)}.png", fig))
    return out


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:#.3g}"


def figures(run: RunRecord, vs: RunRecord | None = None) -> list[tuple[str, Any]]:
    return kernel_figures(run, vs) + e2e_figures(run, vs)


def write_plots(run: RunRecord, out: Path, vs: RunRecord | None = None, single_file: bool = False) -> list[Path]:
    """Render every figure of ``run`` (``vs`` overlaid) to PNGs; returns the paths.

    ``out`` is a folder (created with its parents; each figure keeps its own name,
    replacing a file of that name), or with ``single_file`` a ``.png`` path: one
    figure is written there, several as ``<stem>-<figure name>`` beside it.

    Raises:
        NormbenchError: matplotlib is missing, or the run has no OK case to plot.
        OSError: the folder or a file cannot be written.
    """
    figs = figures(run, vs)
    if not figs:
        raise NormbenchError(f"run {run.run_id} has no OK case with metrics to plot")
    folder = out.parent if single_file else out
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs:
        if not single_file:
            path = out / name
        elif len(figs) == 1:
            path = out
        else:
            path = out.with_name(f"{out.stem}-{name}")
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths
