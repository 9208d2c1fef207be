"""Export a store as a D4RL-layout HDF5 file (what `open_d4rl_hdf5` and D4RL users read).

Steps without a recorded action are written as NaN action rows. The file is written
under a temporary name and renamed at the end, so a failed export leaves nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from ssorl_data.errors import StoreExistsError
from ssorl_data.metadata import space_to_json
from ssorl_data.store import TrajectoryStore


def export_d4rl_hdf5(
    store: TrajectoryStore, path: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write the D4RL keys, plus metadata/{env_id, observation_space, action_space} (JSON)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise StoreExistsError(f"{path}: already exists. Pass overwrite=True (CLI: --overwrite).")
    n = store.n_steps
    obs_shape = tuple(store.observation_space.shape)
    act_shape = tuple(store.action_space.shape)
    obs_dtype = store.observation_space.dtype
    partial = path.with_name(f".{path.name}.partial")
    try:
        with h5py.File(partial, "w") as f:
            columns = {
                "observations": ((n, *obs_shape), obs_dtype),
                "next_observations": ((n, *obs_shape), obs_dtype),
                "actions": ((n, *act_shape), np.float32),
                "rewards": ((n,), np.float32),
                "terminals": ((n,), bool),
                "timeouts": ((n,), bool),
            }
            out = {k: f.create_dataset(k, shape=s, dtype=d) for k, (s, d) in columns.items()}
            step = 0
            for batch in store.iter_batches():
                hi = step + batch.n_steps
                is_final = np.zeros(batch.observations.shape[0], bool)
                is_final[batch.index.obs_stop - 1] = True
                is_first = np.roll(is_final, 1)
                out["observations"][step:hi] = batch.observations[~is_final]
                out["next_observations"][step:hi] = batch.observations[~is_first]
                out["actions"][step:hi] = batch.actions
                out["rewards"][step:hi] = batch.rewards
                out["terminals"][step:hi] = batch.terminations
                out["timeouts"][step:hi] = batch.truncations
                step = hi
            metadata = f.create_group("metadata")
            metadata["env_id"] = store.env_id or ""
            metadata["observation_space"] = json.dumps(space_to_json(store.observation_space))
            metadata["action_space"] = json.dumps(space_to_json(store.action_space))
            metadata["exported_from"] = str(store.path)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
