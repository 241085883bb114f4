"""``distillery builtin ...``: train and evaluate the shipped tiny teacher and student.

Mounted by the main command line as ``app.add_typer(builtin_app, name="builtin")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="builtin",
    help="The built-in arith task's tiny teacher and student models: train them, evaluate them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()


@app.command()
def train(
    seed: Annotated[int, typer.Option(help="seed of the data, tokenizer, initialisation and data order")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="parent folder of teacher/ and student/ "
                                             "(default: the package's shipped models, overwritten)")] = None,
    quick: Annotated[bool, typer.Option(help="tiny models, a few steps (a smoke test, seconds)")] = False,
    evaluate: Annotated[bool, typer.Option(help="measure accuracy on the held-out test set for the cards")] = True,
    eval_limit: Annotated[int | None, typer.Option(help="evaluate on the first N test problems only")] = None,
    only: Annotated[list[str] | None, typer.Option(help="train only this model (teacher or student); repeatable")] = None,
    main_phase_from: Annotated[Path | None, typer.Option(help="continue models with a refine phase from their "
                                                         "main-phase output of an earlier run (parent folder)")] = None,
) -> None:
    """Train the built-in teacher and student from scratch on CPU and write them with model cards."""
    from distillery.builtin.arith import test_set
    from distillery.builtin.models import BUILTIN_MODELS, MODELS_DIR
    from distillery.builtin.train import TrainingRecipe, train_builtin_models

    _quiet_transformers()
    recipe = TrainingRecipe.quick(seed) if quick else TrainingRecipe(seed=seed)
    if only:
        unknown = set(only) - set(BUILTIN_MODELS)
        if unknown:
            raise typer.BadParameter(f"unknown model(s) {sorted(unknown)}; use {list(BUILTIN_MODELS)}")
        recipe.models = tuple(only)
    problems = test_set()
    if quick and eval_limit is None:
        eval_limit = 10
    if eval_limit is not None:
        problems = problems[:eval_limit]
    summary = train_builtin_models(seed, out or MODELS_DIR, recipe=recipe, evaluate=evaluate,
                                   eval_problems=problems, main_phase_from=main_phase_from,
                                   log=lambda m: typer.echo(m, err=True))
    for name, info in summary.items():
        typer.echo(f"{name}: {info['parameters']:,} parameters, trained in {info['seconds']:.0f} s")


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="builtin:teacher, builtin:student or a model folder")] = "builtin:teacher",
    limit: Annotated[int | None, typer.Option(help="first N problems of the test set (default: all 1000)")] = None,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding")] = 0.0,
    samples: Annotated[int, typer.Option(help="responses per problem")] = 1,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    batch_size: Annotated[int, typer.Option(help="prompts per generate call")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="print the full result as JSON")] = False,
) -> None:
    """Accuracy per difficulty of a model on the held-out arith test set (programs run in the sandbox)."""
    from distillery.builtin.arith import test_set
    from distillery.evaluate.arith import evaluate_arith

    _quiet_transformers()
    problems = test_set()[:limit] if limit is not None else test_set()
    res = evaluate_arith(model, problems, temperature=temperature, samples=samples, seed=seed, batch_size=batch_size)
    if as_json:
        typer.echo(json.dumps(res, indent=1))
        return
    typer.echo(f"{model}: {res['n_problems']} problems x {samples} sample(s), temperature {temperature}")
    for d, v in res["per_difficulty"].items():
        typer.echo(f"  d{d}: {v['accuracy']:.3f} ({v['correct']}/{v['n']})")
    typer.echo(f"  all: {res['accuracy']:.3f}   verdicts: {res['verdicts']}")
