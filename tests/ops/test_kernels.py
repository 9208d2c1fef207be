"""Every backend agrees exactly with the NumPy reference, and rejects bad indices.

The window ops are checked for every observation layout (float32 or uint8 rows,
[R, D] or N-d [R, *obs_shape]): the reference converts to float32 and flattens
first, and results must be bit-identical to it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssorl_data import ops
from ssorl_data.errors import KernelIndexError, KernelInputError

from . import reference
from .conftest import LAYOUTS, Table

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def tables(draw: st.DrawFn, layout: str = "float32") -> Table:
    """Episode tables with length-1 episodes and short ones, so windows overrun episode starts.

    Observations have `layout` (conftest.LAYOUTS); N-d ones get 1 to 3 trailing dimensions.
    """
    lengths = draw(st.lists(st.integers(1, 9), min_size=1, max_size=6))
    rank = draw(st.integers(1, 3)) if layout.endswith("-nd") else 1
    obs_shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    if not layout.endswith("-nd"):
        obs_shape = (draw(st.integers(1, 5)),)
    return Table.of_layout(
        layout, lengths, obs_shape, draw(st.integers(1, 3)), draw(st.integers(0, 99))
    )


def _samples(draw: st.DrawFn, table: Table) -> np.ndarray:
    """Global steps: every first and last step of every episode, plus random ones."""
    edges = np.concatenate([table.step_start, table.step_start + table.lengths - 1])
    extra = draw(st.lists(st.integers(0, table.n_steps - 1), max_size=12))
    steps = np.concatenate([edges, np.asarray(extra, np.int64)]).astype(np.int64)
    return steps[draw(st.permutations(range(len(steps))))]


def run_idm(table: Table, steps: np.ndarray, k: int, backend: str) -> tuple[np.ndarray, ...]:
    episodes = table.episode_of_step[steps].astype(np.int64)
    out = torch.full((len(steps), k + 2, table.n_dim), np.nan)
    valid = torch.ones((len(steps), k + 2), dtype=torch.bool)
    ops.idm_windows(
        table.t("observations"),
        table.t("step_start"),
        table.t("lengths"),
        torch.from_numpy(episodes),
        torch.from_numpy(steps),
        table.t("mean"),
        table.t("std"),
        k,
        out,
        valid,
        backend=backend,
    )
    return out.numpy(), valid.numpy(), episodes


@pytest.mark.parametrize("layout", LAYOUTS)
@SETTINGS
@given(data=st.data(), k=st.integers(0, 4))
def test_idm_windows_match_reference(backend: str, layout: str, data: st.DataObject, k: int):
    table = data.draw(tables(layout))
    steps = _samples(data.draw, table)
    out, valid, episodes = run_idm(table, steps, k, backend)
    want_out, want_valid = reference.idm_windows(
        table.observations,
        table.step_start,
        table.lengths,
        episodes,
        steps,
        table.mean,
        table.std,
        k,
    )
    np.testing.assert_array_equal(valid, want_valid)
    assert out.tobytes() == want_out.tobytes()  # bit-exact, not approximately equal


def run_subtrajectories(
    table: Table, episodes: np.ndarray, starts: np.ndarray, context: int, backend: str
) -> list[np.ndarray]:
    rtg = reference.returns_to_go(table.rewards, table.step_start, table.lengths, 0.99)
    batch, n_dim, n_act = len(episodes), table.n_dim, table.actions.shape[1]
    outs = [
        torch.full((batch, context, n_dim), np.nan),
        torch.full((batch, context, n_act), np.nan),
        torch.full((batch, context), np.nan),
        torch.full((batch, context), -7, dtype=torch.int64),
        torch.ones((batch, context), dtype=torch.bool),
    ]
    ops.subtrajectories(
        table.t("observations"),
        table.t("actions"),
        torch.from_numpy(rtg),
        table.t("step_start"),
        table.t("lengths"),
        torch.from_numpy(episodes),
        torch.from_numpy(starts),
        table.t("mean"),
        table.t("std"),
        context,
        *outs,
        backend=backend,
    )
    return [o.numpy() for o in outs]


@pytest.mark.parametrize("layout", LAYOUTS)
@SETTINGS
@given(data=st.data(), context=st.integers(1, 12))
def test_subtrajectories_match_reference(
    backend: str, layout: str, data: st.DataObject, context: int
):
    table = data.draw(tables(layout))
    steps = _samples(data.draw, table)
    episodes = table.episode_of_step[steps].astype(np.int64)
    starts = (steps - table.step_start[episodes]).astype(np.int64)
    got = run_subtrajectories(table, episodes, starts, context, backend)
    rtg = reference.returns_to_go(table.rewards, table.step_start, table.lengths, 0.99)
    want = reference.subtrajectories(
        table.observations,
        table.actions,
        rtg,
        table.step_start,
        table.lengths,
        episodes,
        starts,
        table.mean,
        table.std,
        context,
    )
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        assert g.tobytes() == w.tobytes()


def _as_float32_rows(table: Table) -> Table:
    """The same table with observations converted to float32 and flattened to [R, D]."""
    flat = Table([1], 1, 1, 0)
    flat.__dict__.update(table.__dict__)
    flat.observations = table.observations.reshape(len(table.observations), -1)
    flat.observations = flat.observations.astype(np.float32)
    return flat


def test_uint8_frames_equal_their_float32_values(backend: str):
    """uint8 [R, h, w, c] frames give the bytes the op gives for the same values in float32."""
    table = Table([1, 5, 3], n_dim=24, n_act=2, seed=9, obs_shape=(2, 4, 3), uint8=True)
    flat = _as_float32_rows(table)
    steps = np.arange(table.n_steps, dtype=np.int64)
    got, want = run_idm(table, steps, 2, backend), run_idm(flat, steps, 2, backend)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True))
    episodes = table.episode_of_step.astype(np.int64)
    starts = steps - table.step_start[episodes]
    got = run_subtrajectories(table, episodes, starts, 4, backend)
    want = run_subtrajectories(flat, episodes, starts, 4, backend)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True))
    assert got[0].shape == (table.n_steps, 4, 24)  # flattened states [B, K, D]


@SETTINGS
@given(table=tables(), gamma=st.sampled_from([0.0, 0.5, 0.99, 1.0]))
def test_returns_to_go_match_reference(backend: str, table: Table, gamma: float):
    out = torch.full((table.n_steps,), np.nan)
    ops.returns_to_go(
        table.t("rewards"), table.t("step_start"), table.t("lengths"), gamma, out, backend=backend
    )
    want = reference.returns_to_go(table.rewards, table.step_start, table.lengths, gamma)
    assert out.numpy().tobytes() == want.tobytes()


def test_idm_window_clamps_to_episode_start(backend: str):
    table = Table([1, 3], n_dim=2, n_act=1, seed=0)
    out, valid, _ = run_idm(table, np.array([0, 1, 3], np.int64), 2, backend)
    # Step 0 of the one-step episode: s_0 repeated three times, then s_1.
    assert valid.tolist()[0] == [False, False, True, True]
    rows = (table.observations[[0, 0, 0, 1]] - table.mean) / table.std
    assert out[0].tobytes() == rows.tobytes()
    # Global step 3 is the last step of episode 1 (steps 1..3, observation rows 2..5):
    # s_1, s_2, s_3 and the kept final observation s_4 = row 3 + 1 + 1.
    assert valid.tolist()[2] == [True, True, True, True]
    rows = (table.observations[[2, 3, 4, 5]] - table.mean) / table.std
    assert out[2].tobytes() == rows.tobytes()


def test_subtrajectory_is_left_padded(backend: str):
    table = Table([5], n_dim=1, n_act=1, seed=1)
    states, _, _, timesteps, mask = run_subtrajectories(
        table, np.array([0], np.int64), np.array([3], np.int64), 4, backend
    )
    assert mask.tolist() == [[False, False, True, True]]
    assert timesteps.tolist() == [[0, 0, 3, 4]]
    assert states[0, :2].tolist() == [[0.0], [0.0]]


@pytest.mark.parametrize(
    ("episode", "step", "message"),
    [
        (2, 0, "sample 1 has episode_index 2"),
        (-1, 0, "sample 1 has episode_index -1"),
        (0, 4, "sample 1 has step_index 4, outside its episode 0"),
        (1, 3, "sample 1 has step_index 3, outside its episode 1"),
    ],
)
def test_idm_windows_reject_bad_indices(backend: str, episode: int, step: int, message: str):
    table = Table([4, 3], n_dim=2, n_act=1, seed=2)
    out = torch.empty((2, 3, 2))
    valid = torch.empty((2, 3), dtype=torch.bool)
    with pytest.raises(KernelIndexError, match=message):
        ops.idm_windows(
            table.t("observations"),
            table.t("step_start"),
            table.t("lengths"),
            torch.tensor([0, episode]),
            torch.tensor([0, step]),
            table.t("mean"),
            table.t("std"),
            1,
            out,
            valid,
            backend=backend,
        )


def test_idm_windows_reject_table_that_overruns_observations(backend: str):
    table = Table([4, 3], n_dim=2, n_act=1, seed=2)
    obs = table.t("observations")[:-1]  # one row short of N + E
    with pytest.raises(KernelIndexError, match="sample 0 .* needs observation rows"):
        ops.idm_windows(
            obs,
            table.t("step_start"),
            table.t("lengths"),
            torch.tensor([1]),
            torch.tensor([6]),
            table.t("mean"),
            table.t("std"),
            1,
            torch.empty((1, 3, 2)),
            torch.empty((1, 3), dtype=torch.bool),
            backend=backend,
        )


@pytest.mark.parametrize("start", [-1, 3, 100])
def test_subtrajectories_reject_start_outside_episode(backend: str, start: int):
    table = Table([4, 3], n_dim=2, n_act=1, seed=3)
    with pytest.raises(
        KernelIndexError, match=f"sample 0 has start {start}, outside its episode 1"
    ):
        run_subtrajectories(table, np.array([1], np.int64), np.array([start], np.int64), 5, backend)


def test_returns_to_go_reject_episode_past_rewards(backend: str):
    with pytest.raises(KernelIndexError, match=r"episode 1 spans global steps \[3, 6\)"):
        ops.returns_to_go(
            torch.zeros(5),
            torch.tensor([0, 3]),
            torch.tensor([3, 3]),
            0.9,
            torch.zeros(5),
            backend=backend,
        )


def _idm_args(table: Table) -> list:
    return [
        table.t("observations"),
        table.t("step_start"),
        table.t("lengths"),
        torch.tensor([0, 1]),
        torch.tensor([0, 5]),
        table.t("mean"),
        table.t("std"),
        1,
        torch.empty((2, 3, 2)),
        torch.empty((2, 3), dtype=torch.bool),
    ]


@pytest.mark.parametrize(
    ("position", "bad", "message"),
    [
        (0, lambda t: t.double(), "observations of dtype"),
        (3, lambda t: t.int(), "episode_index of dtype"),
        (0, lambda t: t.t(), "observations"),
        (8, lambda t: t[:, :2], "out"),
        (9, lambda t: t[:1], "valid"),
        (5, lambda t: t[:1], "mean"),
    ],
)
def test_idm_windows_reject_bad_arguments(backend: str, position: int, bad, message: str):
    args = _idm_args(Table([4, 3], n_dim=2, n_act=1, seed=4))
    args[position] = bad(args[position])
    with pytest.raises(KernelInputError, match=message):
        ops.idm_windows(*args, backend=backend)


def test_unknown_backend_is_rejected():
    with pytest.raises(KernelInputError, match="backend to be one of"):
        ops.idm_windows(*_idm_args(Table([4, 3], 2, 1, 4)), backend="fortran")


def test_negative_k_and_empty_context_are_rejected(backend: str):
    args = _idm_args(Table([4, 3], n_dim=2, n_act=1, seed=6))
    args[7] = -1
    with pytest.raises(KernelInputError, match="expected k >= 0"):
        ops.idm_windows(*args, backend=backend)
    table = Table([4], n_dim=2, n_act=1, seed=6)
    with pytest.raises(KernelInputError, match="expected context >= 1"):
        run_subtrajectories(table, np.array([0], np.int64), np.array([0], np.int64), 0, backend)
