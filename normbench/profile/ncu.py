"""Nsight Compute (``ncu``): one kernel case profiled in a child process, and ncu's raw CSV parsed.

How a case is profiled (``profile_case``):

1. the case (op, params, provider, its recorded seed) is written to
   ``<run>/profile/<stem>.case.json`` (``normbench.profile.case.CaseSpec``);
2. ``profile_command`` runs ``python -m normbench.profile.one_case <stem>.case.json``
   under ``ncu --clock-control none --set basic --metrics <METRICS>
   --profile-from-start off --launch-count <MAX_KERNELS> -f -o <stem>.ncu-rep``: the child
   builds the provider's callable, calls it ``warmup`` times (compilation, autotuning:
   not profiled), then brackets ``launches`` calls (one by default) with
   ``cudaProfilerStart`` / ``cudaProfilerStop``, so ncu profiles exactly the kernels
   of those calls, each one (an unfused composition launches several);
3. ``import_command`` prints the report's raw page as CSV
   (``ncu --import <stem>.ncu-rep --csv --page raw --print-kernel-base demangled``),
   which ``parse_raw_csv`` reads into one ``NcuKernel`` per launch.

``--clock-control none`` leaves the GPU's clocks as the driver sets them (ncu's default,
``base``, locks them to base clocks: durations then differ from the timed pass's), and
is recorded with the profile. ncu's other defaults stand: kernel replay, caches flushed
before each replay pass (``--cache-control all``), like the timed pass's cold L2.

The raw page's layout (Nsight Compute CLI manual, "Output Pages" and ``--csv``): a
header row of column names, ``"ID","Process ID","Process Name","Host Name","Kernel
Name","Context","Stream","Block Size","Grid Size","Device","CC"`` then one column per
metric (``dram__throughput.avg.pct_of_peak_sustained_elapsed``, ...); a second row
with each metric's unit (``%``, ``nsecond``, ``register/thread``; empty for the
identity columns); then one row per profiled kernel launch. Numbers may carry
thousands separators (``1,024``). ncu's own messages (``==PROF== ...``,
``==WARNING== ...``) may be interleaved when the CSV goes to a terminal; they are
skipped.

ncu is found as ``$NORMBENCH_NCU`` (a path), else ``ncu`` on ``PATH`` (``find_ncu``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normbench.errors import NormbenchError

#: What each profile keeps per kernel: ``NcuKernel`` field -> the ncu metric it comes from.
METRICS = {
    "dram_pct": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "registers": "launch__registers_per_thread",
    "time_us": "gpu__time_duration.sum",
}
#: ``--clock-control``: leave the clocks as the driver sets them (recorded with each profile).
CLOCK_CONTROL = "none"
#: ``--set``: the section set collected besides ``METRICS``.
SECTION_SET = "basic"
#: ``--launch-count``: the most kernel launches one case's profile takes.
MAX_KERNELS = 64
#: Seconds one case may take under ncu (its child imports torch and compiles the provider).
TIMEOUT_S = 900
#: Environment variable naming the ncu executable when it is not on PATH.
NCU_ENV = "NORMBENCH_NCU"
#: The raw page's identity columns this parser reads.
ID_COLUMN, NAME_COLUMN, BLOCK_COLUMN, GRID_COLUMN = "ID", "Kernel Name", "Block Size", "Grid Size"
#: Time units ncu prints for ``gpu__time_duration`` -> factor to microseconds.
TIME_UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
              "second": 1e6, "s": 1e6}


class ProfileError(NormbenchError):
    """Profiling one case failed; ``artifacts`` names the files it left (relative to the run)."""

    def __init__(self, message: str, artifacts: dict[str, str] | None = None):
        super().__init__(message)
        self.artifacts = artifacts or {}


class NcuParseError(ProfileError):
    """ncu's output is not the raw CSV page this parser reads."""


# --------------------------------------------------------------------------- finding ncu
def find_ncu() -> str | None:
    """The ncu executable: ``$NORMBENCH_NCU`` when it names an executable file, else ``ncu`` on PATH, else None."""
    given = os.environ.get(NCU_ENV)
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return shutil.which("ncu")


def ncu_version(ncu: str) -> str | None:
    """ncu's version line (``Version 2025.1.0.0 (build ...)``), or None when ``ncu --version`` fails."""
    try:
        out = subprocess.run([ncu, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    for line in lines:
        if line.lower().startswith("version"):
            return line
    return lines[-1] if lines else None


# --------------------------------------------------------------------------- command lines
def profile_command(ncu: str, export: Path, spec_path: Path, python: str | None = None, *,
                    clock_control: str = CLOCK_CONTROL, section_set: str = SECTION_SET,
                    launch_count: int = MAX_KERNELS) -> list[str]:
    """The command line that profiles one case: ncu around ``python -m normbench.profile.one_case``.

    Args:
        ncu: the ncu executable.
        export: the report's path, ending in ``.ncu-rep`` (ncu adds the suffix to a path without it;
            given whole, a stem with dots in it stays as it is); replaced if there.
        spec_path: the case's ``CaseSpec`` JSON file.
        python: the interpreter for the child (default: this one).
        clock_control: ``--clock-control`` (``none``: the driver's clocks; ncu's default locks base clocks).
        section_set: ``--set``.
        launch_count: ``--launch-count``, the most launches profiled.
    """
    return [
        ncu, "--clock-control", clock_control, "--set", section_set, "--metrics", ",".join(METRICS.values()),
        "--profile-from-start", "off", "--launch-count", str(launch_count),
        "--force-overwrite", "--export", str(export),
        python or sys.executable, "-m", "normbench.profile.one_case", str(spec_path),
    ]


def import_command(ncu: str, report: Path) -> list[str]:
    """The command line that prints ``report``'s raw page as CSV, kernel names demangled in full."""
    return [ncu, "--import", str(report), "--csv", "--page", "raw", "--print-kernel-base", "demangled"]


# --------------------------------------------------------------------------- parsing
@dataclass
class NcuKernel:
    """One profiled kernel launch from the raw page.

    Attributes:
        id: ncu's launch ID (its order among the profiled launches).
        name: the kernel's name (demangled with ``--print-kernel-base demangled``).
        time_us: ``gpu__time_duration.sum`` in us.
        dram_pct: ``dram__throughput.avg.pct_of_peak_sustained_elapsed`` (%).
        occupancy_pct: achieved occupancy, ``sm__warps_active.avg.pct_of_peak_sustained_active`` (%).
        registers: ``launch__registers_per_thread``.
        block, grid: the launch's sizes as ncu prints them (``(256, 1, 1)``).
    """

    id: int
    name: str
    time_us: float | None = None
    dram_pct: float | None = None
    occupancy_pct: float | None = None
    registers: int | None = None
    block: str | None = None
    grid: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The ``normbench.store.ProfileKernel`` of this launch."""
        return {"name": self.name, "time_us": self.time_us, "calls": 1, "dram_pct": self.dram_pct,
                "occupancy_pct": self.occupancy_pct, "registers": self.registers, "block": self.block,
                "grid": self.grid}


def _number(text: str, where: str) -> float | None:
    """A raw-page value: ``1,024`` -> 1024.0; empty, ``n/a`` or non-finite -> None.

    Raises:
        NcuParseError: anything else that is not a number.
    """
    raw = text.strip().replace(",", "")
    if raw == "" or raw.lower() in ("n/a", "nan", "-"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise NcuParseError(f"ncu raw CSV: {where}: {text!r} is not a number") from None
    return value if math.isfinite(value) else None


def _csv_lines(text: str) -> list[str]:
    """The CSV part of ncu's output: from the header row on, without ncu's ``==...==`` message lines.

    Raises:
        NcuParseError: no header row.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith('"ID",') or line.lstrip().startswith("ID,"):
            return [x for x in lines[i:] if x.strip() and not x.lstrip().startswith("==")]
    shown = " | ".join(x.strip() for x in lines[:3] if x.strip())[:300] or "nothing"
    raise NcuParseError(f"ncu raw CSV: no header row (\"ID\",...,\"Kernel Name\",...) in ncu's output; it began: {shown}")


def parse_raw_csv(text: str) -> list[NcuKernel]:
    """ncu's ``--csv --page raw`` output -> one ``NcuKernel`` per profiled launch, in launch (ID) order.

    Metrics are read by column name (``METRICS``); a metric the report lacks is None in
    every kernel. ``gpu__time_duration`` is converted to us from the unit of the units
    row (``nsecond``, ``usecond``, ``msecond``, ``second``). See the module docstring for
    the layout.

    Raises:
        NcuParseError: no header row, no ``Kernel Name`` column, the details page's layout
            (``Metric Name`` / ``Metric Value`` columns), a data row with another
            number of cells than the header, an ID or metric value that is not a number, or
            a time unit it does not know.
    """
    rows = list(csv.reader(io.StringIO("\n".join(_csv_lines(text)))))
    header = [h.strip() for h in rows[0]]
    if NAME_COLUMN not in header:
        raise NcuParseError(f"ncu raw CSV: no {NAME_COLUMN!r} column in the header ({', '.join(header[:12])}, ...)")
    if "Metric Name" in header and "Metric Value" in header:
        raise NcuParseError("ncu CSV: one row per metric (the details page, --page details), not the raw page "
                            "(--page raw) this parser reads")
    col = {name: i for i, name in enumerate(header)}
    body = rows[1:]
    units: dict[str, str] = {}
    if body and body[0] and body[0][0].strip() == "":  # the units row: no ID
        units = {h: (body[0][i].strip() if i < len(body[0]) else "") for i, h in enumerate(header)}
        body = body[1:]
    time_col = METRICS["time_us"]
    scale = 1.0
    if time_col in col:
        unit = units.get(time_col, "")
        if unit not in TIME_UNITS and unit != "":
            raise NcuParseError(f"ncu raw CSV: {time_col} in unit {unit!r}, not one of {', '.join(TIME_UNITS)}")
        scale = TIME_UNITS.get(unit, 1e-3)  # no units row: ncu's base unit, nanoseconds
    kernels: list[NcuKernel] = []
    for n, row in enumerate(body, start=2 + bool(units)):
        if len(row) != len(header):
            raise NcuParseError(f"ncu raw CSV: row {n} has {len(row)} cells, the header {len(header)}")
        ident = _number(row[col[ID_COLUMN]], f"row {n}, ID") if ID_COLUMN in col else float(len(kernels))
        values: dict[str, Any] = {}
        for field_name, metric in METRICS.items():
            if metric in col:
                values[field_name] = _number(row[col[metric]], f"row {n}, {metric}")
        if values.get("time_us") is not None:
            values["time_us"] = round(values["time_us"] * scale, 6)
        if values.get("registers") is not None:
            values["registers"] = int(round(values["registers"]))
        kernels.append(NcuKernel(
            id=int(ident) if ident is not None else len(kernels), name=row[col[NAME_COLUMN]].strip(),
            block=row[col[BLOCK_COLUMN]].strip() or None if BLOCK_COLUMN in col else None,
            grid=row[col[GRID_COLUMN]].strip() or None if GRID_COLUMN in col else None,
            **values,
        ))
    return sorted(kernels, key=lambda k: k.id)


# --------------------------------------------------------------------------- one case
def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def profile_case(spec: Any, run_dir: Path, stem: str, *, ncu: str | None = None, device: str | None = None,
                 timeout: float = TIMEOUT_S) -> tuple[dict[str, Any], dict[str, str]]:
    """Profile one case under ncu (see the module docstring): its ``CaseProfile`` and artifacts.

    Files go to ``run_dir/profile/``: ``<stem>.case.json`` (the case, to profile it again by
    hand with ``profile_command``), ``<stem>.ncu-rep`` (open it in Nsight Compute),
    ``<stem>.ncu.csv`` (the raw page) and ``<stem>.ncu.log`` (ncu's and the child's output).

    Args:
        spec: the ``normbench.profile.case.CaseSpec``.
        run_dir: the run's directory; artifact paths are relative to it.
        stem: the files' common name.
        ncu: the executable (default: ``find_ncu()``).
        device: the GPU's name, recorded with the profile.
        timeout: seconds the profiled child may take.

    Raises:
        ProfileError: ncu is missing, fails, times out or profiles nothing, or its CSV does
            not parse (``NcuParseError``); ``artifacts`` names the files left.
    """
    ncu = ncu or find_ncu()
    if ncu is None:
        raise ProfileError("ncu not found (PATH, $NORMBENCH_NCU)")
    out = run_dir / "profile"
    out.mkdir(parents=True, exist_ok=True)
    rel = {"profile_case": f"profile/{stem}.case.json", "ncu_log": f"profile/{stem}.ncu.log"}
    spec_path, log = run_dir / rel["profile_case"], run_dir / rel["ncu_log"]
    spec_path.write_text(spec.to_json(), encoding="utf-8")
    report = out / f"{stem}.ncu-rep"
    report.unlink(missing_ok=True)
    cmd = profile_command(ncu, report, spec_path)
    t0 = time.perf_counter()
    try:
        with open(log, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProfileError(f"ncu did not finish in {timeout:.0f} s", rel) from None
    if proc.returncode != 0 or not report.is_file():
        what = f"ncu exited with code {proc.returncode}" if proc.returncode else "ncu wrote no report (no kernel profiled)"
        raise ProfileError(f"{what}; {rel['ncu_log']} ends: {_tail(log, 8)}", rel)
    rel["ncu_report"] = f"profile/{stem}.ncu-rep"
    imported = subprocess.run(import_command(ncu, report), capture_output=True, text=True, timeout=300)
    if imported.returncode != 0:
        raise ProfileError(f"ncu --import exited with code {imported.returncode}: "
                           f"{(imported.stderr or imported.stdout).strip()[-500:]}", rel)
    rel["ncu_csv"] = f"profile/{stem}.ncu.csv"
    (run_dir / rel["ncu_csv"]).write_text(imported.stdout, encoding="utf-8")
    kernels = parse_raw_csv(imported.stdout)
    if not kernels:
        raise ProfileError("ncu profiled no kernel between cudaProfilerStart and cudaProfilerStop", rel)
    profile = {
        "tool": "ncu", "tool_version": ncu_version(ncu), "device": device,
        "warmup": spec.warmup, "launches": spec.launches,
        "settings": {"clock_control": CLOCK_CONTROL, "set": SECTION_SET, "metrics": list(METRICS.values()),
                     "range": "cudaProfilerStart/Stop (--profile-from-start off)", "launch_count": MAX_KERNELS,
                     "replay": "ncu defaults: kernel replay, caches flushed before each pass"},
        "command": cmd, "kernels": [k.as_record() for k in kernels],
        "duration_s": round(time.perf_counter() - t0, 3),
    }
    return profile, rel
