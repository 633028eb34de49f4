"""A tiny resumable training stage on ``pipelines.training.StageRun``, for the Slurm tests.

A linear regression fitted by SGD on batches drawn from the stage's seeded generator; each step
can be slowed down so that a test can cancel or requeue the Slurm job half-way. Every start is
recorded in ``--attempts`` (the step it starts from and the Slurm job it runs in), which is how
the tests tell a resumed run from one that started over.

    python -m tests.slurm_workflow.toy_train model.pt --steps 20 --every 2 --attempts attempts.txt
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from pipelines.stage_log import kept_stage_log
from pipelines.training import StageRun


def train(out: Path, steps: int, every: int, seconds_per_step: float = 0.0, attempts: Path | None = None) -> StageRun:
    """Run (or resume) the stage to ``steps`` steps and write its final checkpoint to ``out``."""
    run = StageRun(out=out, method="toy", stage="fit", identity={"features": 4}, config={"steps": steps},
                   seed=0, every_steps=every)
    model = torch.nn.Linear(4, 1)
    optimizers = {"sgd": torch.optim.SGD(model.parameters(), lr=0.05)}
    start = run.resume(model, optimizers)
    if attempts is not None:
        with open(attempts, "a") as record:
            record.write(f"start={start} job={os.environ.get('SLURM_JOB_ID', '-')}\n")
    target = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    while run.step < steps:
        x = torch.from_numpy(run.rng.standard_normal((16, 4))).float()
        loss = torch.nn.functional.mse_loss(model(x), x @ target)
        optimizers["sgd"].zero_grad()
        loss.backward()
        optimizers["sgd"].step()
        run.advance(model, optimizers)
        print(f"step {run.step} loss {loss.item():.4f}", flush=True)
        time.sleep(seconds_per_step)
    run.finish(model, optimizers)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--every", type=int, required=True, help="periodic checkpoint interval in steps")
    parser.add_argument("--seconds-per-step", type=float, default=0.0)
    parser.add_argument("--attempts", type=Path)
    args = parser.parse_args(argv)
    with kept_stage_log(args.out):
        train(args.out, args.steps, args.every, args.seconds_per_step, args.attempts)


if __name__ == "__main__":
    main()
