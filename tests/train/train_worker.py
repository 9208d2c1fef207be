"""A training process for the kill tests: trains (resuming what it finds) into OUT.

Run as `python -m tests.train.train_worker OUT STEPS`. The data, config and seed are
fixed, so every run into a fresh OUT gives the same parameters; it prints "ready" once
its imports are done and it starts training.
"""

from __future__ import annotations

import sys

import torch

from ssorl_train import loop
from ssorl_train.algos import make_config
from tests.train.conftest import make_training_data

CONFIG = {"hidden_dim": 16, "batch_size": 16}


def main(out: str, steps: int) -> None:
    torch.set_num_threads(1)  # the same reductions in every process: bit-identical results
    data = make_training_data(episode_lengths=(20, 9, 25))
    print("ready", flush=True)
    loop.train(
        data,
        "td3bc",
        make_config("td3bc", CONFIG),
        loop.LoopConfig(steps=steps, seed=7, eval_every=0, checkpoint_every=3, log_every=10),
        out,
        resume=True,
        progress=False,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
