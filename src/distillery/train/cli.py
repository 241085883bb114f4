"""``distillery distill RUN_DIR --student MODEL --method sft|kd|dpo``: the command-line face of
:func:`distillery.train.api.distill`. Mount with ``app.command("distill")(distill_command)``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from distillery.errors import DistilleryError


class Divergence(StrEnum):
    """KD divergences (generalized JSD ``beta`` 0, 1, or ``--beta``)."""

    forward = "forward"
    reverse = "reverse"
    jsd = "jsd"


def distill_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a finished run directory (accepted.parquet, report.json...)")],
    student: Annotated[str, typer.Option(help="student model: builtin:student, a folder or a Hub id")],
    method: Annotated[str, typer.Option(help="a registered training method: sft (accepted responses), kd (teacher "
                                             "token distributions), dpo (accepted-vs-rejected pairs)")] = "sft",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder (default: RUN_DIR-student-METHOD, beside the run directory)")] = None,
    teacher: Annotated[str | None, typer.Option(help="kd teacher (default: the run's teacher.model)")] = None,
    steps: Annotated[int | None, typer.Option(help="optimizer steps (overrides --epochs)")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data (default: 1)")] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate (default: by method and model size)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="examples (dpo: pairs) per step (default: 8)")] = None,
    max_length: Annotated[int | None, typer.Option(help="most tokens per example (default: 1024)")] = None,
    beta: Annotated[float | None, typer.Option(help="kd: JSD weight with --kl jsd (0.5); dpo: DPO beta (0.1)")] = None,
    lmbda: Annotated[float | None, typer.Option(help="kd: on-policy fraction (GKD) (default: 0)")] = None,
    temperature: Annotated[float | None, typer.Option(help="kd: softmax temperature (default: 1)")] = None,
    kl: Annotated[Divergence | None, typer.Option(help="kd divergence (default: forward)")] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing", help="sft: pack sequences (GPU with "
                                                 "FlashAttention; slower on CPU) (default: off)")] = None,
    pairs_per_prompt: Annotated[int, typer.Option(help="dpo: most preference pairs per prompt")] = 1,
    seed: Annotated[int, typer.Option(help="seed of data order, dropout and sampling")] = 0,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: all this process may use)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train a student on a run's data (SFT, KD or DPO with TRL); write the model, metrics.json and a model card."""
    from distillery.train.api import distill

    console = Console(stderr=True)
    try:
        metrics = distill(
            run_dir, student, method, out, teacher=teacher, pairs_per_prompt=pairs_per_prompt,
            steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, beta=beta, lmbda=lmbda,
            temperature=temperature, kl=kl.value if kl else None, packing=packing, seed=seed, threads=threads,
            progress=progress,
        )
    except DistilleryError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    data = metrics.get("data") or {}
    used = f"{data['pairs']} pairs" if "pairs" in data else f"{metrics.get('examples')} examples"
    console.print(
        f"{metrics['method']}: {metrics['steps']} steps on {used} · loss {metrics['first_loss']} -> "
        f"{metrics['last_loss']} · {metrics['train_tokens_per_s']} tokens/s · {metrics['wall_time_s']} s",
        highlight=False,
    )
    console.print(f"wrote {metrics['out_dir']} (model, metrics.json, README.md)", highlight=False)
