"""normbench.report.plot: figures carry the expected series, and the PNGs read back."""

from __future__ import annotations

import statistics

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from matplotlib import image as mpimg  # noqa: E402

from normbench.report import plot  # noqa: E402
from normbench.store import load_run  # noqa: E402

RUNS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "runs"
BASE = "rmsnorm-20260101T000000Z-aaaaaa"
CAND = "rmsnorm-20260102T000000Z-bbbbbb"
E2E = "e2e-20260104T000000Z-eeeeee"


def test_kernel_figure_series_and_ceiling():
    base, cand = load_run(RUNS / BASE), load_run(RUNS / CAND)
    figs = plot.kernel_figures(base, vs=cand)
    assert [name for name, _ in figs] == ["rms_norm__hidden_size=4096_dtype=bfloat16_residual=False.png"]
    fig = figs[0][1]
    ax_t, ax_b = fig.axes[:2]
    assert ax_t.get_xscale() == "log" and ax_b.get_xscale() == "log"
    lines = {ln.get_label(): ln for ln in ax_t.get_lines()}
    for p in ("torch_naive", "torch_compile", "triton", "torch_rms_norm"):
        assert p in lines and lines[p].get_linestyle() == "-"
    vs = {k: v for k, v in lines.items() if k.endswith(f"({CAND})")}
    assert set(vs) == {f"{p} ({CAND})" for p in ("torch_naive", "torch_compile", "triton")}
    assert all(v.get_linestyle() == "--" for v in vs.values())
    # triton's baseline line: num_tokens on x, the median time on y
    x, y = lines["triton"].get_data()
    assert list(x) == [16, 1024]
    def median(tokens: int) -> float:  # the repeats' samples pooled
        return statistics.median(s for c in base.cases if c.provider == "triton" and c.params["num_tokens"] == tokens
                                 for s in c.metrics["time_us"].samples)

    assert list(y) == pytest.approx([median(16), median(1024)])
    assert list(vs[f"triton ({CAND})"].get_data()[0]) == [16, 1024, 4096]  # the new shape too
    ceiling = [ln for ln in ax_b.get_lines() if ln.get_label().startswith("copy bandwidth")]
    assert len(ceiling) == 1 and ceiling[0].get_ydata()[0] == pytest.approx(3001.2)
    bw = {ln.get_label(): ln for ln in ax_b.get_lines()}
    assert 2000 < bw["triton"].get_ydata()[1] < 3001.2  # GB/s at 1024 tokens


def test_e2e_figures_bars_with_intervals():
    figs = dict(plot.e2e_figures(load_run(RUNS / E2E)))
    assert set(figs) == {"serve.png", "latency.png", "gsm8k.png"}
    serve = figs["serve.png"]
    titles = [ax.get_title().splitlines()[0] for ax in serve.axes if ax.get_visible()]
    assert titles == ["output_throughput", "ttft_ms"]
    bars = [p for p in serve.axes[0].patches]
    assert len(bars) == 2  # default, fused
    heights = [b.get_height() for b in bars]
    assert heights[1] / heights[0] == pytest.approx(1.07, abs=0.02)
    assert serve.axes[0].containers and any(c.__class__.__name__ == "ErrorbarContainer" for c in serve.axes[0].containers)
    latency = figs["latency.png"]
    assert [t.get_text() for t in latency.axes[0].get_xticklabels()] == ["input_len=512", "input_len=2048"]


def test_write_plots_pngs_read_back(tmp_path):
    paths = plot.write_plots(load_run(RUNS / BASE), tmp_path, vs=load_run(RUNS / CAND))
    assert len(paths) == 1 and paths[0].exists()
    img = mpimg.imread(paths[0])
    h, w = img.shape[:2]
    assert (w, h) == (round(13 * plot.DPI), round(4.8 * plot.DPI))
    assert paths[0].stat().st_size > 20_000
    assert img[..., :3].std() > 0.05  # not a blank canvas
    e2e = plot.write_plots(load_run(RUNS / E2E), tmp_path / "e2e")
    assert sorted(p.name for p in e2e) == ["gsm8k.png", "latency.png", "serve.png"]
    for p in e2e:
        assert mpimg.imread(p).shape[1] >= 400
