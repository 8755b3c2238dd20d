"""The ``normbench`` command line (Typer + rich).

The only place that prints for the user and chooses exit codes:

* 0: everything ran and every case that ran was correct;
* 1: a case FAILED or was INCORRECT (or ``compare --fail-on`` found a regression);
* 2: bad input (``NormbenchError``: suite, names, runs, options);
* 130: interrupted (Ctrl-C / SIGTERM); finished cases are kept, ``--resume`` completes the run.

Commands live in ``normbench.cli.run`` (list, validate, run, show, schema) and
``normbench.cli.analysis`` (compare, noise, export, plot) and ``normbench.cli.model``
(make-model); each registers on ``app``. None imports torch at module level, so ``normbench list`` starts fast.
"""

from __future__ import annotations

import sys

import typer
import typer.core
from rich.console import Console
from rich.text import Text

from normbench.errors import NormbenchError


class _Group(typer.core.TyperGroup):
    """Maps ``NormbenchError`` to its message and exit code for every entry point
    (the console script and Typer's test runner alike); ``--debug`` re-raises."""

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except NormbenchError as e:
            if STATE["debug"]:
                raise
            err_console().print(Text("error: ", style="bold red") + Text(str(e)), soft_wrap=True)
            ctx.exit(e.exit_code)


app = typer.Typer(
    cls=_Group,
    name="normbench",
    help=(
        "Benchmark RMSNorm-family kernels and their quantization fusions, from the "
        "micro-kernel to the served model.\n\n"
        "Typical use: `normbench run suites/rmsnorm.yaml`, then "
        "`normbench compare <run-a> <run-b> --format markdown` for a pull request."
    ),
    no_args_is_help=False,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

#: Global state set by the callback.
STATE = {"debug": False}

from normbench.report.fit import install_help_layout  # noqa: E402

install_help_layout()  # --help below 100 columns: each option's help under its names, never cut


#: ``--results-dir``, the option of every command that reads or writes runs.
RESULTS_DIR_OPT = typer.Option(
    None, "--results-dir", help="Where runs are stored (default: $NORMBENCH_RESULTS_DIR, else ./runs).",
    show_default=False,
)


def console() -> Console:
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    STATE["debug"] = debug
    if version:
        from normbench import __version__

        console().print(f"normbench {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        console().print(ctx.get_help())
        raise typer.Exit(0)


def _register() -> None:
    import importlib

    for name in ("normbench.cli.run", "normbench.cli.analysis", "normbench.cli.model"):
        try:
            importlib.import_module(name)  # each module registers its commands on `app`
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else argv
    app(args=args, prog_name="normbench")
