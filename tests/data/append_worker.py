"""A writer that appends deterministic episodes forever; the kill test SIGKILLs it.

Run as `python -m tests.data.append_worker STORE`. Episode i is fully determined by
i, so the test can check every committed episode after the kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ssorl_data.episodes import EpisodeBatch, concat_batches, make_episode
from ssorl_data.store import TrajectoryStore

OBS_DIM, ACT_DIM = 16, 3


def episode(i: int) -> EpisodeBatch:
    length = 1 + (i * 37) % 300
    obs = (np.full((length + 1, OBS_DIM), i) + np.arange(length + 1)[:, None]).astype(np.float32)
    actions = None if i % 3 == 0 else np.full((length, ACT_DIM), i % 7 / 7, np.float32)
    return make_episode(
        obs,
        actions,
        np.full(length, i, np.float32),
        action_shape=(ACT_DIM,),
        source=f"episode {i}",
    )


def main(path: Path) -> None:
    if not path.exists():
        from tests.data.factories import spaces

        TrajectoryStore.create(path, *spaces((OBS_DIM,), (ACT_DIM,)), chunk_steps=1000).close()
    with TrajectoryStore.open(path, mode="a") as store:
        print("ready", flush=True)
        while True:
            first = store.n_episodes
            store.append(concat_batches([episode(i) for i in range(first, first + 25)]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
