"""The ``distillery`` command line (typer)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from distillery import __version__
from distillery.errors import DistilleryError, user_message

console = Console(stderr=True)
_PASS_THROUGH = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, typer.Exit, typer.Abort)
"""Exceptions that are exits, not errors: usage errors (status 2), ``--help``, a command's own exit."""


def report_error(e: BaseException) -> None:
    """Print ``e`` as ``error: <message>`` (see :func:`distillery.errors.user_message`) and exit 1.

    With ``DISTILLERY_DEBUG=1`` in the environment, an exception that is a bug is re-raised
    (its traceback shown) instead.

    Raises:
        typer.Exit: always (status 1), unless re-raising ``e``.
    """
    message, bug = user_message(e)
    if bug and os.environ.get("DISTILLERY_DEBUG"):
        raise e
    for line in message.split("\n"):
        console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(1) from None


class ErrorBoundary(TyperGroup):
    """The command group of ``distillery``: every command (``builtin``'s and ``distill`` too)
    runs inside one error boundary, so no input ends in a traceback: each error is one line
    naming its file, line and field, or its recipe key, and exit status 1.

    Click's own exits (usage errors: status 2; ``--help``; ``typer.Exit``) pass through, as do
    ``KeyboardInterrupt`` and ``SystemExit``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as e:  # noqa: BLE001 (the boundary: see the class doc)
            report_error(e)


app = typer.Typer(
    name="distillery",
    help="Generate, verify, filter, deduplicate and decontaminate training data; distill and evaluate students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=ErrorBoundary,
    rich_markup_mode=None,  # plain help: rich's boxes cut options' help off at 80 columns
)


def user_errors(fn: Any) -> Any:
    """Run a command inside the error boundary (:func:`report_error`) when it is called alone
    (the app's :class:`ErrorBoundary` does the same for every command)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as e:  # noqa: BLE001 (the boundary)
            report_error(e)

    return wrapper


def _parse_set(values: list[str] | None) -> dict[str, Any]:
    """``--set key.path=value`` items -> ``{key.path: value}`` (a JSON value, else the text).

    Raises:
        DistilleryError: an item without ``=``, or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in values or []:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise DistilleryError(f"--set expects key.path=value, got {item[:80]!r}")
        try:
            out[key] = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            out[key] = raw
    return out


@app.command()
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="run directory (overrides output.dir)")] = None,
    skip_bad_rows: Annotated[bool, typer.Option(help="record unreadable seed rows as rejected and go on")] = False,
    fresh: Annotated[bool, typer.Option(help="discard earlier results in the run directory (keeps the cache)")] = False,
    limit: Annotated[int | None, typer.Option(help="use at most this many seeds (overrides seeds.limit)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: key.path=value (JSON)")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Run (or resume) a recipe: generate, verify, filter, deduplicate, decontaminate, write the dataset."""
    from distillery.pipeline.runner import Pipeline
    from distillery.recipe import Recipe

    overrides = _parse_set(set_)
    if limit is not None:
        overrides["seeds.limit"] = limit
    r = Recipe.from_yaml(recipe, overrides)
    Pipeline(r, run_dir=output, skip_bad_rows=skip_bad_rows, fresh=fresh, progress=progress, console=console).run()


@app.command()
@user_errors
def plan(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="recipe YAML file")],
    pilot: Annotated[int | None, typer.Option(min=1, help="seeds in the pilot (default: the first batch)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="run directory whose cache the pilot fills")] = None,
    limit: Annotated[int | None, typer.Option(help="use at most this many seeds (overrides seeds.limit)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: key.path=value (JSON)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """Estimate a run before spending: requests, tokens, cost and wall time from a pilot (cached for the run)."""
    from distillery.pipeline.estimate import estimate, format_plan
    from distillery.recipe import Recipe

    overrides = _parse_set(set_)
    if limit is not None:
        overrides["seeds.limit"] = limit
    r = Recipe.from_yaml(recipe, overrides)
    result = estimate(r, run_dir=output, pilot=pilot)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for line in format_plan(result):
            typer.echo(line)


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a finished run directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print report.json instead of the table")] = False,
) -> None:
    """Print the funnel and figures of a finished run."""
    from distillery.pipeline.runner import load_report
    from distillery.report.build import print_funnel

    try:
        data = load_report(run_dir)
    except (OSError, ValueError) as e:  # a report.json that is not UTF-8 JSON, or not a file
        text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DistilleryError(f"{Path(run_dir) / 'report.json'}: cannot read the report: {text}") from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        print_funnel(data, Console())


@app.command("eval")
@user_errors
def eval_(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="model folder, Hub name, builtin:teacher|builtin:student, or a served model name")],
    task: Annotated[str, typer.Option(help="arith | gsm8k | math500")] = "arith",
    split: Annotated[str, typer.Option(help="test (gsm8k, math500: only test); arith also train, validation")] = "test",
    n: Annotated[int | None, typer.Option(help="evaluate the first N problems")] = None,
    samples: Annotated[int, typer.Option(help="sampled answers per problem for pass@k (0: greedy only)")] = 0,
    k: Annotated[list[int] | None, typer.Option("--k", help="k of pass@k (repeatable)")] = None,
    temperature: Annotated[float, typer.Option(help="temperature of the pass@k samples")] = 0.8,
    max_new_tokens: Annotated[int | None, typer.Option(help="generation budget (default: the task's)")] = None,
    base_url: Annotated[str | None, typer.Option(help="evaluate a model served at this OpenAI-compatible URL")] = None,
    batch_size: Annotated[int, typer.Option(help="prompts per generate call (transformers)")] = 64,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(help="seed of the sampled answers")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the JSON report here")] = None,
) -> None:
    """Greedy accuracy and pass@k of a model on a task, checked by the pipeline's verifiers."""
    from distillery.evaluate.harness import evaluate
    from distillery.evaluate.report import print_eval
    from distillery.io.atomic import atomic_write_text

    ks = tuple(k or ([1] if samples == 0 else sorted({1, samples})))
    result = evaluate(
        model, task, split, n, samples=samples, ks=ks, temperature=temperature, max_new_tokens=max_new_tokens,
        backend="openai" if base_url else "transformers", base_url=base_url, batch_size=batch_size, device=device,
        seed=seed,
    )
    print_eval(result, Console())
    if out:
        atomic_write_text(out, json.dumps(result, indent=2))
        console.print(f"wrote {out}")


@app.command()
@user_errors
def improve(
    model: Annotated[str, typer.Option(help="base model")] = "builtin:student",
    rounds: Annotated[int, typer.Option(help="fine-tuning rounds")] = 3,
    problems: Annotated[int, typer.Option(help="training problems sampled each round")] = 400,
    k: Annotated[int, typer.Option("--k", help="candidates per problem per round")] = 4,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.8,
    mix_gold: Annotated[float, typer.Option(help="gold examples added, as a fraction of self-generated ones")] = 0.0,
    rationalize: Annotated[bool, typer.Option(help="STaR rationalization: retry unsolved problems with the answer as a hint")] = False,
    restart: Annotated[str, typer.Option(help="base (STaR, ReST-EM) or previous")] = "base",
    steps: Annotated[int, typer.Option(help="SFT steps per round")] = 150,
    eval_problems: Annotated[int, typer.Option(help="held-out test problems evaluated per round")] = 200,
    seed: Annotated[int, typer.Option()] = 0,
    difficulty: Annotated[list[int] | None, typer.Option(help="arith levels to train and evaluate on; repeatable "
                                                         "(default: all)")] = None,
    lr: Annotated[float | None, typer.Option(help="peak SFT learning rate (default: the SFT default)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("runs/improve"),
) -> None:
    """Self-improvement: sample k candidates, keep the verified ones, fine-tune, repeat (STaR / RFT / ReST-EM)."""
    from distillery.train.improve import ImproveConfig
    from distillery.train.improve import improve as run_improve

    if restart not in ("base", "previous"):
        raise DistilleryError(f"--restart must be base or previous, got {restart!r}")
    config = ImproveConfig(model=model, rounds=rounds, problems=problems, samples=k, temperature=temperature,
                           mix_gold=mix_gold, rationalize=rationalize, restart=restart, steps=steps,
                           eval_problems=eval_problems, seed=seed, lr=lr,
                           difficulties=tuple(difficulty) if difficulty else None)
    result = run_improve(config, out)
    for r in result["rounds"]:
        extra = "" if r["round"] == 0 else f" · accept rate {r['accept_rate']:.1%} · {r['examples']} examples"
        console.print(f"round {r['round']}: accuracy {r['accuracy']:.1%}{extra}")
    console.print(f"wrote {out}/improve.json")


@app.command()
@user_errors
def experiment(
    name: Annotated[str, typer.Argument(metavar="NAME", help="filter-lift | collapse | star, or `list` to list them")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder (default runs/experiments/NAME)")] = None,
    quick: Annotated[bool, typer.Option(help="a much smaller configuration (minutes; for smoke tests)")] = False,
) -> None:
    """Run an experiment; write NAME.json and NAME.png (`distillery experiment list`: what there is)."""
    from distillery import registry
    from distillery.experiments.registry import run_experiment

    if name == "list":
        for registered in registry.names("experiment"):
            typer.echo(registered)
        return

    folder = out or Path("runs/experiments") / name
    result = run_experiment(name, folder, quick=quick)
    console.print(json.dumps({k: v for k, v in result.items() if k not in ("rounds", "arms", "datasets")}, indent=2, default=str))
    console.print(f"wrote {folder}/{name}.json and {name}.png")


from distillery.builtin.cli import app as builtin_app  # noqa: E402
from distillery.train.cli import distill_command  # noqa: E402

app.command("distill")(distill_command)
app.add_typer(builtin_app, name="builtin")


@app.command()
def version() -> None:
    """Print distillery's version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point for ``python -m distillery``."""
    app()


if __name__ == "__main__":
    main()
