"""The ``dlbench`` command line: each command parses its options and calls one library function.

Errors the user can fix become one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from dlbench.errors import DlbenchError

app = typer.Typer(
    name="dlbench",
    help="Benchmark long-sequence state-space models: scan throughput, training suites, leaderboards.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()


@app.callback()
def _root() -> None:
    """Benchmark long-sequence state-space models: scan throughput, training suites, leaderboards."""


@app.command("models")
def models_command(
    names: Annotated[list[str] | None, typer.Argument(help="Models to show (default: all registered).")] = None,
    hidden: Annotated[int, typer.Option(help="Hidden width H.")] = 128,
    state: Annotated[int, typer.Option(help="State size P.")] = 64,
    blocks: Annotated[int, typer.Option(help="Residual blocks.")] = 2,
    inputs: Annotated[int, typer.Option(help="Input channels.")] = 1,
    classes: Annotated[int, typer.Option(help="Output classes.")] = 10,
    norm: Annotated[str, typer.Option(help="Normalisation: batch or layer.")] = "batch",
) -> None:
    """List registered models with their layer, options and parameter count."""
    from dlbench.models import ModelConfig
    from dlbench.report import models_table

    config = ModelConfig(
        num_inputs=inputs, hidden_dim=hidden, state_dim=state, num_blocks=blocks, num_outputs=classes, norm=norm
    )
    console.print(models_table(names or None, config))


# --- profile commands (dlbench profile ...) ---

# --- run / suites commands ---

# --- export / compare / plot / show / merge commands ---


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn every user error into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except DlbenchError as error:
        print(f"dlbench: error: {error}", file=sys.stderr)
        return error.exit_code
    except typer.TyperException as error:
        message = error.format_message()
        if type(error).__name__ == "NoArgsIsHelpError":
            # Bare `dlbench`: the message is the help text itself.
            print(message, file=sys.stderr)
        else:
            print(f"dlbench: error: {' '.join(message.split())}", file=sys.stderr)
        return error.exit_code
    except typer.Exit as exit_:
        return exit_.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("dlbench: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    sys.exit(main())
