"""One vocabulary for case labels: ``normbench.report.labels``, used by every table and message."""

from __future__ import annotations

from normbench.cli.analysis import _params_short
from normbench.report import compare_cells, compare_markdown, compare_rich, labels, plot, run_table, standing
from normbench.report.labels import axis_token, case_label, e2e_label, params_text, short_dtype

GROUP = {"num_tokens": 33, "hidden_size": 1536, "dtype": "float16", "eps": 1e-6, "residual": True,
         "quant_dtype": "fp8", "group_size": 128, "scale_layout": "col_major"}


def test_tokens():
    assert [axis_token(k, GROUP[k]) for k in ("dtype", "residual", "quant_dtype", "group_size", "scale_layout")] == [
        "fp16", "+residual", "fp8", "g128", "col_major"]
    assert axis_token("residual", False) == "-residual" and axis_token("static_scale", True) == "+static_scale"
    assert axis_token("eps", 1e-5) == "eps=1e-05" and axis_token("scale_ub", 2.0) == "scale_ub=2.0"
    assert short_dtype("bfloat16") == "bf16" and short_dtype("int8") == "int8" and short_dtype(None) is None


def test_case_label():
    assert case_label(GROUP, ["num_tokens", "residual", "group_size", "scale_layout"]) == "33x1536 +residual g128 col_major"
    assert case_label(GROUP, []) == "33x1536"
    assert case_label({"dtype": "bfloat16"}, ["dtype"]) == "bf16"  # no shape axes: no shape token
    assert case_label({}, ["group_size"]) == "-"


def test_e2e_and_params_text():
    assert e2e_label({"input_len": 512}, ["input_len"]) == "input_len=512"
    assert e2e_label({"input_len": 512}, ["input_len"], compact=True) == "in=512"
    assert e2e_label({}, []) == ""
    assert params_text({"hidden_size": 4096, "eps": 1e-6, "dtype": "bfloat16"}, hide=labels.HIDDEN_PARAMS) == (
        "hidden_size=4096, dtype=bfloat16")


def test_every_renderer_labels_with_it():
    """The run table, compare, plots, standing and --fail-on share the functions (no second labeler)."""
    compare_modules = (compare_cells, compare_rich, compare_markdown)
    assert all(m.kernel_case_label is case_label for m in compare_modules) and run_table.case_label is case_label
    assert compare_cells.e2e_point_label is e2e_label and compare_rich.e2e_point_label is e2e_label
    assert run_table.e2e_label is e2e_label
    assert plot.params_text is params_text and standing.case_label is case_label
    assert not any(hasattr(m, "DTYPE_SHORT") for m in compare_modules) and not hasattr(run_table, "SHORT_DTYPE")
    # the same case reads the same in standing's worst point and --fail-on's message
    assert standing._label(GROUP) == "33x1536 +residual fp8 g128 col_major fp16"
    assert _params_short(GROUP) == "33x1536 fp16 +residual fp8 g128"
    assert _params_short({"input_len": 512, "max_tokens": 8}) == "input_len=512"
