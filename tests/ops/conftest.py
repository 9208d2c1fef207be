"""Fixtures and builders shared by the kernel tests."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from ssorl_data import ops
from ssorl_data.errors import KernelBuildWarning

from . import reference

BACKENDS = ("cpp", "numba", "torch")
# Without a C++ compiler the cpp cases are skipped; with one, a broken build fails them.
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None


@pytest.fixture(scope="session", autouse=True)
def _default_backend() -> None:
    """Resolve the default backend once; its fallback warning is tested in test_backend.py."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelBuildWarning)
        ops.backend_info()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test runs once per backend; the C++ one is built (and cached) on first use."""
    if request.param == "cpp" and not HAS_COMPILER:
        pytest.skip("no C++ compiler on PATH: the cpp backend cannot be built here")
    return request.param


# Observation layouts the kernels take: (dtype, whether rows are N-d). "uint8-nd" is
# shaped like image frames [R, h, w, c]; "float32" is the original [R, D].
LAYOUTS = ("float32", "uint8", "float32-nd", "uint8-nd")


class Table:
    """A random episode table with observations [N + E, *obs_shape], actions [N, A], rewards [N].

    `obs_shape` defaults to (n_dim,); `uint8` draws integer pixel values 0..255 (mean/std
    then on that scale). mean/std are per flattened dimension, [prod(obs_shape)].
    """

    def __init__(
        self,
        lengths: list[int],
        n_dim: int,
        n_act: int,
        seed: int,
        *,
        obs_shape: tuple[int, ...] | None = None,
        uint8: bool = False,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.lengths = np.asarray(lengths, np.int64)
        self.step_start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.n_steps = int(self.lengths.sum())
        n_rows = self.n_steps + len(lengths)
        self.obs_shape = (n_dim,) if obs_shape is None else tuple(obs_shape)
        self.n_dim = int(np.prod(self.obs_shape))
        shape = (n_rows, *self.obs_shape)
        if uint8:
            self.observations = rng.integers(0, 256, shape, dtype=np.uint8)
            self.mean = rng.uniform(0, 255, self.n_dim).astype(np.float32)
            self.std = rng.uniform(1.0, 90.0, self.n_dim).astype(np.float32)
        else:
            self.observations = rng.standard_normal(shape).astype(np.float32) * 3
            self.mean = rng.standard_normal(self.n_dim).astype(np.float32)
            self.std = rng.uniform(0.1, 3.0, self.n_dim).astype(np.float32)
        self.actions = rng.uniform(-1, 1, (self.n_steps, n_act)).astype(np.float32)
        self.rewards = rng.standard_normal(self.n_steps).astype(np.float32)
        self.episode_of_step = np.repeat(np.arange(len(lengths)), self.lengths)

    @classmethod
    def of_layout(
        cls, layout: str, lengths: list[int], obs_shape: tuple[int, ...], n_act: int, seed: int
    ) -> Table:
        """A table whose observations have one of LAYOUTS: N-d ones keep `obs_shape`, 2-D
        ones flatten it to (prod(obs_shape),)."""
        flat = (int(np.prod(obs_shape)),)
        shape = obs_shape if layout.endswith("-nd") else flat
        return cls(lengths, flat[0], n_act, seed, obs_shape=shape, uint8=layout.startswith("uint8"))

    def t(self, name: str) -> torch.Tensor:
        """An attribute as a torch tensor sharing memory."""
        return torch.from_numpy(getattr(self, name))


@pytest.fixture(scope="session")
def cpp() -> None:
    """Load the C++ library (built once and cached) whatever the default backend is."""
    if not HAS_COMPILER:
        pytest.skip("no C++ compiler on PATH: the cpp backend cannot be built here")
    ops.idm_windows(*sample_inputs("cpu")["idm_windows"], backend="cpp")


def sample_inputs(device: str, frames: bool = False) -> dict[str, list]:
    """One small valid argument list per op, with length-1 and short episodes.

    `frames`: observations are uint8 [R, 1, 3, 1] (a tiny image; D = 3 as otherwise).
    """
    if frames:
        table = Table([1, 4, 2], n_dim=3, n_act=2, seed=5, obs_shape=(1, 3, 1), uint8=True)
    else:
        table = Table([1, 4, 2], n_dim=3, n_act=2, seed=5)

    def t(name: str) -> torch.Tensor:
        return table.t(name).to(device)

    def long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    rtg = torch.from_numpy(
        reference.returns_to_go(table.rewards, table.step_start, table.lengths, 0.9)
    ).to(device)
    zeros = {"device": device}
    return {
        "idm_windows": [
            t("observations"),
            t("step_start"),
            t("lengths"),
            long([0, 1, 1, 2]),
            long([0, 1, 4, 6]),
            t("mean"),
            t("std"),
            2,
            torch.zeros(4, 4, 3, **zeros),
            torch.zeros(4, 4, dtype=torch.bool, **zeros),
        ],
        "subtrajectories": [
            t("observations"),
            t("actions"),
            rtg,
            t("step_start"),
            t("lengths"),
            long([0, 1, 2]),
            long([0, 2, 1]),
            t("mean"),
            t("std"),
            3,
            torch.zeros(3, 3, 3, **zeros),
            torch.zeros(3, 3, 2, **zeros),
            torch.zeros(3, 3, **zeros),
            torch.zeros(3, 3, dtype=torch.int64, **zeros),
            torch.zeros(3, 3, dtype=torch.bool, **zeros),
        ],
        "returns_to_go": [
            t("rewards"),
            t("step_start"),
            t("lengths"),
            0.9,
            torch.zeros(7, **zeros),
        ],
    }
