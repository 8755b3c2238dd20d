"""Bad suites: each gets its own clear message with file:line:col and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from normbench.errors import SuiteError
from normbench.suite import load_suite, parse_suite

GOOD_STAGE = """\
  - kind: kernel
    op: rms_norm
    providers: [torch_naive]
    sweep: {num_tokens: [1, 2], hidden_size: 64}
"""

BAD = [
    # (id, yaml text, expected message: exact first line)
    ("dtype", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n    sweep:\n"
     "      num_tokens: 1\n      hidden_size: 64\n      dtype: bf16\n",
     "s.yaml:9:7: stages[0].sweep.dtype: Input should be 'bfloat16', 'float16' or 'float32'"),
    ("dtype in list", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n"
     "    sweep: {num_tokens: 1, hidden_size: 64, dtype: [bfloat16, fp8]}\n",
     "s.yaml:6:63: stages[0].sweep.dtype[1]: Input should be 'bfloat16', 'float16' or 'float32'"),
    ("negative num_tokens", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n"
     "    sweep: {num_tokens: [4, -2], hidden_size: 64}\n",
     "s.yaml:6:29: stages[0].sweep.num_tokens[1]: Input should be greater than 0"),
    ("hidden 0", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n"
     "    sweep: {num_tokens: 1, hidden_size: 0}\n",
     "s.yaml:6:28: stages[0].sweep.hidden_size: Input should be greater than 0"),
    ("unknown op", "name: x\nstages:\n  - kind: kernel\n    op: rmsnorm\n    providers: [triton]\n"
     "    sweep: {num_tokens: 1, hidden_size: 64}\n",
     "s.yaml:4:5: stages[0].op: unknown op 'rmsnorm'. Did you mean 'rms_norm'? Known: fused_add_rms_norm, "
     "fused_add_rms_norm_nvfp4_quant, rms_norm, rms_norm_group_quant, rms_norm_nvfp4_quant, rms_norm_quant, rms_norm_static_quant, scaled_quant"),
    ("unknown provider", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [tritn]\n"
     "    sweep: {num_tokens: 1, hidden_size: 64}\n",
     "s.yaml:5:5: stages[0].providers: unknown provider 'tritn'. Did you mean 'triton'? Known: flashinfer, liger, "
     "quack, reference, torch_compile, torch_naive, torch_rms_norm, triton, vllm"),
    ("unknown kind", "name: x\nstages:\n  - kind: kernal\n",
     "s.yaml:3:5: stages[0]: Input tag 'kernal' found using 'kind' does not match any of the expected tags: "
     "'kernel', 'throughput', 'latency', 'accuracy', 'startup'"),
    ("missing kind", "name: x\nstages:\n  - op: rms_norm\n",
     "s.yaml:3:5: stages[0]: Unable to extract tag using discriminator 'kind'"),
    ("extra top key", "name: x\nfoo: 1\nstages:\n" + GOOD_STAGE,
     "s.yaml:2:1: foo: Extra inputs are not permitted"),
    ("extra stage key", "name: x\nstages:\n" + GOOD_STAGE + "    warmup: 3\n",
     "s.yaml:7:5: stages[0].warmup: Extra inputs are not permitted"),
    ("axis not of op", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n"
     "    sweep: {num_tokens: 1, hidden_size: 64, group_size: 64}\n",
     "s.yaml:6:45: stages[0].sweep.group_size: op rms_norm has no axis 'group_size' "
     "(its axes: num_tokens, hidden_size, dtype, eps, residual)"),
    ("axis value op rejects", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm_group_quant\n"
     "    providers: [triton]\n    sweep: {num_tokens: 1, hidden_size: 256, group_size: 32}\n",
     "s.yaml:6:46: stages[0].sweep.group_size: op rms_norm_group_quant accepts [64, 128], got [32]"),
    ("fixed axis", "name: x\nstages:\n  - kind: kernel\n    op: fused_add_rms_norm\n    providers: [triton]\n"
     "    sweep: {num_tokens: 1, hidden_size: 64, residual: false}\n",
     "s.yaml:6:45: stages[0].sweep.residual: op fused_add_rms_norm is always residual=True"),
    ("no stages", "name: x\nstages: []\n",
     "s.yaml:2:1: stages: List should have at least 1 item after validation, not 0"),
    ("missing name", "stages:\n" + GOOD_STAGE,
     "s.yaml:1:1: name: Field required"),
    ("bad name", "name: 'my suite'\nstages:\n" + GOOD_STAGE,
     "s.yaml:1:1: name: 'my suite' is not a safe name; a name is 1 to 100 characters from A-Z a-z 0-9 . _ -, "
     "starting with a letter or a digit"),
    ("duplicate key", "name: x\nname: y\nstages: []\n",
     "s.yaml:2:1: duplicate key 'name' (first at line 1, column 1)"),
    ("list document", "- name: x\n- name: y\n",
     "s.yaml:1:1: a suite is a mapping (name:, stages:, ...), not a list"),
    ("scalar document", "hello\n", "s.yaml:1:1: a suite is a mapping (name:, stages:, ...), not a str"),
    ("empty", "", "s.yaml: the file is empty; a suite needs at least 'name' and 'stages'"),
    ("only comments", "# nothing\n", "s.yaml: the file holds no YAML document; a suite needs at least 'name' and 'stages'"),
    ("syntax", "name: x\nstages: [\n",
     "s.yaml:3:1: YAML syntax error: while parsing a flow node: expected the node content, but found '<stream end>'"),
    ("tab indentation", "name: x\nstages:\n\t- kind: kernel\n",
     "s.yaml:3:1: YAML syntax error: while scanning for the next token: found character '\\t' that cannot start any token"),
    ("provider twice", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton, triton]\n"
     "    sweep: {num_tokens: 1, hidden_size: 64}\n",
     "s.yaml:5:5: stages[0].providers: provider listed twice: triton"),
    ("unknown rule key", "name: x\nstages:\n" + GOOD_STAGE + "    exclude: [{tokens: 1}]\n",
     "s.yaml:7:15: stages[0].exclude[0]: unknown key 'tokens' (rules match on: provider, num_tokens, hidden_size, "
     "dtype, eps, residual)"),
    ("baseline not a variant", "name: x\nvariants: {a: {}}\nbaseline: b\nstages:\n" + GOOD_STAGE,
     "s.yaml:3:1: baseline: 'b' is not a variant (variants: a)"),
    ("e2e stage without server", "name: x\nstages:\n  - kind: throughput\n    client: guidellm\n"
     "    prompt_tokens: 64\n    output_tokens: 64\n    rate: 2\n    max_seconds: 5\n",
     "s.yaml:3:5: stages[0]: a throughput stage needs a suite-level 'server'"),
    ("duplicate stage name", "name: x\nstages:\n" + GOOD_STAGE + GOOD_STAGE,
     "s.yaml:7:5: stages[1].name: 'rms_norm' is used by an earlier stage"),
    ("unfused on a norm op", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n"
     "    providers: [{unfused: {norm: torch_naive, quant: triton}}]\n    sweep: {num_tokens: 1, hidden_size: 64}\n",
     "s.yaml:5:5: stages[0].providers: unfused compositions apply to rms_norm_quant, rms_norm_group_quant and rms_norm_static_quant, not rms_norm"),
    ("wrong type", "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: triton\n"
     "    sweep: {num_tokens: 1, hidden_size: 64}\n",
     "s.yaml:5:5: stages[0].providers: Input should be a valid list"),
]


@pytest.mark.parametrize("text,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_suite_message(text: str, expected: str) -> None:
    with pytest.raises(SuiteError) as err:
        parse_suite(text, "s.yaml")
    assert str(err.value).splitlines()[0] == expected


def test_all_errors_listed_in_file_order() -> None:
    text = "name: x\nstages:\n  - kind: kernel\n    op: rms_norm\n    providers: [triton]\n" \
           "    sweep: {num_tokens: [1, -2], hidden_size: 0, dtype: [bfloat16, fp8]}\n"
    with pytest.raises(SuiteError) as err:
        parse_suite(text, "s.yaml")
    lines = str(err.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "stages[0].sweep.num_tokens[1]", "stages[0].sweep.hidden_size", "stages[0].sweep.dtype[1]"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"nope.yaml: no such file"):
        load_suite(tmp_path / "nope.yaml")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="is a directory"):
        load_suite(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(f)


def test_good_suite_scalars_become_lists_and_hash_recorded(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text("name: ok\nstages:\n" + GOOD_STAGE)
    loaded = load_suite(f)
    stage = loaded.suite.stages[0]
    assert stage.sweep.hidden_size == [64]
    assert stage.sweep.dtype == ["bfloat16"]
    assert len(loaded.sha256) == 64
    assert stage.tolerance_for("bfloat16")["norm_rel"] == 1e-2


def test_tolerance_override_merges_with_defaults() -> None:
    s = parse_suite("name: x\nstages:\n" + GOOD_STAGE + "    tolerance: {bfloat16: {norm_rel: 0.5}}\n", "s.yaml")
    tol = s.stages[0].tolerance_for("bfloat16")
    assert tol["norm_rel"] == 0.5 and tol["rtol"] == 2e-2


def test_bundled_suites_validate() -> None:
    for f in sorted(Path(__file__).resolve().parents[2].joinpath("suites").glob("*.yaml")):
        load_suite(f)  # raises on any problem
