"""The training cache: the same view and batches as in RAM, reuse, rebuilds, torn builds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from ssorl_data.episodes import concat_batches
from ssorl_data.store import TrajectoryStore
from ssorl_train import loop
from ssorl_train.action_selection import ProxyFilter, _median
from ssorl_train.algos import make_config
from ssorl_train.batches import DTBatchSampler, TransitionSampler
from ssorl_train.dataset import load_training_data
from ssorl_train.training_cache import STAGING, STAMP, VIEW
from tests.data.factories import make_store, random_batch
from tests.train.test_loop import _tensors

FIELDS = ("observations", "actions", "rewards", "terminations", "step_start", "lengths",
          "obs_mean", "obs_std", "action_low", "action_high", "step_mask")  # fmt: skip
CPU = torch.device("cpu")


def _relabel(store_path, name, seed, n_hidden_nan=0) -> None:
    """A complete relabel run of random proxy actions and tied, rounded uncertainties."""
    rng = np.random.default_rng(seed)
    with TrajectoryStore.open(store_path, mode="a") as store:
        n = store.n_steps
        proxy = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        uncertainty = np.round(rng.random(n), 1).astype(np.float32)  # many ties
        uncertainty[:n_hidden_nan] = np.nan
        run = store.create_relabel(name, {"idm": "test"}, overwrite=True)
        for c in range(run.n_chunks):
            lo, hi = run.chunk_range(c)
            run.write_chunk(c, proxy[lo:hi], uncertainty[lo:hi])
        store.complete_relabel(name, {"seed": seed})


@pytest.fixture
def store(tmp_path):
    """A store of 30 episodes in 7-step chunks (episode ranges cut chunks), split, relabelled."""
    rng = np.random.default_rng(0)
    parts = [random_batch(rng, rng.integers(3, 20, 10), labelling=labelling)
             for labelling in ("all", "partial", "all")]  # fmt: skip
    path = make_store(tmp_path / "s", concat_batches(parts), chunk_steps=7)
    with TrajectoryStore.open(path, mode="a") as s:
        labelled = s.episode_table().labelled
        s.write_split("sp", labelled & (rng.random(30) < 0.6), {"method": "explicit"})
    _relabel(path, "r", seed=1, n_hidden_nan=5)
    return path


def _mapped_from(tensor: torch.Tensor, path) -> bool:
    """Whether the tensor's memory is a mapping of the file `path` (Linux /proc/self/maps)."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(str(path)):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo <= address < hi:
                    return True
    return False


def _same_data(a, b) -> None:
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.step_weight is None) == (b.step_weight is None)
    if a.step_weight is not None:
        assert torch.equal(a.step_weight, b.step_weight)
    assert (a.n_recorded, a.n_proxy, a.source) == (b.n_recorded, b.n_proxy, b.source)


VIEWS = [
    ("full", None, None, 0.0, None),
    ("labelled-only", "sp", None, 0.0, None),
    ("semi-supervised", "sp", "r", 0.0, None),
    ("semi-supervised", "sp", "r", 0.3, None),
    ("semi-supervised", "sp", "r", 0.0, 1.5),
    ("semi-supervised", "sp", "r", 0.45, 2.0),
    ("semi-supervised", None, "r", 0.2, 1.0),
]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: "-".join(map(str, v)))
def test_the_cache_holds_the_in_ram_view_and_gives_the_same_batches(store, tmp_path, view):
    in_ram = load_training_data(store, *view)
    cached = load_training_data(store, *view, cache=tmp_path / "cache")
    assert _mapped_from(cached.observations, tmp_path / "cache" / VIEW / "observations.npy")
    assert not _mapped_from(in_ram.observations, tmp_path / "cache" / VIEW / "observations.npy")
    _same_data(in_ram, cached)
    samplers = [TransitionSampler(d, 32, seed=3, device=CPU) for d in (in_ram, cached)]
    dt = [DTBatchSampler(d, 8, 4, 0.1, seed=3, device=CPU) for d in (in_ram, cached)]
    for _ in range(5):
        for pair in (samplers, dt):
            a, b = (s.sample() for s in pair)
            for key in a:
                assert torch.equal(a[key], b[key]), key


def test_the_proxy_filter_drops_what_a_stable_sort_drops_and_weighs_by_the_median() -> None:
    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        u = np.round(rng.random(n) * 3, int(rng.integers(0, 3))).astype(np.float32)
        u[rng.random(n) < 0.1 * (trial % 3)] = np.nan
        drop = float(rng.choice([0.0, 0.1, 0.5, 0.9, 0.99]))
        fitted = ProxyFilter.fit(u, drop, 1.0)
        n_drop = int(np.floor(drop * n))
        expected = np.zeros(n, bool)
        expected[np.argsort(-u.astype(np.float64), kind="stable")[:n_drop]] = True
        got = fitted.dropped(u, np.arange(n))
        np.testing.assert_array_equal(got, expected)
        kept = u[~expected].astype(np.float64)
        want = float(np.median(kept)) if kept.size else 1.0
        assert (np.isnan(want) and np.isnan(fitted.scale)) or fitted.scale == want
    assert _median(np.array([1.0, 2.0, 4.0, 10.0], np.float32)) == 3.0


def test_the_cache_is_reused_then_rebuilt_after_an_append_and_a_new_relabel_run(store, tmp_path):
    cache = tmp_path / "cache"
    view = ("semi-supervised", "sp", "r", 0.2, None)
    load_training_data(store, *view, cache=cache)
    stamp = cache / VIEW / STAMP
    first, first_key = os.stat(stamp), json.loads(stamp.read_text())["key"]
    load_training_data(store, *view, cache=cache)
    again = os.stat(stamp)
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # reused
    _relabel(store, "r", seed=2)  # a new run under the same name
    rebuilt = load_training_data(store, *view, cache=cache)
    # Rebuilt for the new run. Not told by the inode: a rebuilt stamp may take the number
    # the old one freed.
    assert json.loads(stamp.read_text())["key"]["relabel_run"] != first_key["relabel_run"]
    _same_data(rebuilt, load_training_data(store, *view))
    full = load_training_data(store, "full", cache=cache)
    with TrajectoryStore.open(store, mode="a") as s:
        s.append(random_batch(np.random.default_rng(9), [6, 8], labelling="all"))
    appended = load_training_data(store, "full", cache=cache)
    assert appended.n_steps == full.n_steps + 14
    stamped = json.loads(stamp.read_text())["key"]["source"]["store"]["n_steps"]
    assert stamped == appended.n_steps
    _same_data(appended, load_training_data(store, "full"))


def test_a_torn_or_edited_cache_is_never_read_and_is_rebuilt(store, tmp_path):
    cache = tmp_path / "cache"
    want = load_training_data(store, "full")
    load_training_data(store, "full", cache=cache)
    (cache / VIEW / STAMP).unlink()  # arrays written, stamp never written
    (cache / STAGING).mkdir()  # and what a killed build leaves
    (cache / STAGING / "observations.npy").write_bytes(b"torn")
    _same_data(load_training_data(store, "full", cache=cache), want)
    assert not (cache / STAGING).exists()
    np.save(cache / VIEW / "rewards.npy", np.zeros(3, np.float32))  # wrong shape
    _same_data(load_training_data(store, "full", cache=cache), want)
    (cache / VIEW / STAMP).write_text("{not json")
    _same_data(load_training_data(store, "full", cache=cache), want)


def test_a_run_resumed_from_the_cache_equals_an_uninterrupted_in_ram_run(store, tmp_path):
    view = ("semi-supervised", "sp", "r", 0.1, 1.0)
    config = make_config("td3bc", {"hidden_dim": "16", "batch_size": "16"})

    def run(data, steps, out, resume=False):
        lc = loop.LoopConfig(steps=steps, seed=0, eval_every=0, checkpoint_every=10, log_every=5)
        return loop.train(data, "td3bc", config, lc, out, resume=resume, progress=False)

    run(load_training_data(store, *view), 20, tmp_path / "ram")
    run(load_training_data(store, *view, cache=tmp_path / "cache"), 10, tmp_path / "cached")
    run(load_training_data(store, *view, cache=tmp_path / "cache"), 20, tmp_path / "cached", True)
    from ssorl_train.checkpoint import load_checkpoint

    left, right = (dict(_tensors(load_checkpoint(p / "checkpoint")[0])) for p in
                   (tmp_path / "ram", tmp_path / "cached"))  # fmt: skip
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name


def test_uint8_frames_stay_uint8_in_the_cache_and_train_td3bc(tmp_path):
    rng = np.random.default_rng(4)
    batch = random_batch(rng, [9, 12, 7], obs_shape=(8, 8, 3), obs_dtype=np.uint8)
    path = make_store(tmp_path / "frames", batch, obs_shape=(8, 8, 3), obs_dtype=np.uint8,
                      chunk_steps=5)  # fmt: skip
    data = load_training_data(path, "full", cache=tmp_path / "cache")
    assert data.observations.dtype == torch.uint8
    assert tuple(data.observations.shape) == (28 + 3, 8, 8, 3)
    assert data.obs_dim == 192
    _same_data(data, load_training_data(path, "full"))
    flat = batch.observations.reshape(31, -1).astype(np.float64)
    np.testing.assert_allclose(data.obs_mean.numpy(), flat.mean(0), rtol=1e-6)
    batch_out = TransitionSampler(data, 4, seed=0, device=CPU).sample()
    assert batch_out["observations"].shape == (4, 192)
    assert batch_out["observations"].dtype == torch.float32
    config = make_config("td3bc", {"hidden_dim": "16", "batch_size": "8"})
    lc = loop.LoopConfig(steps=6, seed=0, eval_every=0, checkpoint_every=0, log_every=3)
    summary = loop.train(data, "td3bc", config, lc, tmp_path / "run", progress=False)
    assert summary["steps"] == 6 and summary["data"]["n_steps"] == 28


def test_ssorl_train_caches_in_out_by_default_and_no_cache_trains_the_same(store, tmp_path):
    from click.testing import CliRunner

    from ssorl_train.checkpoint import load_checkpoint
    from ssorl_train.cli.main import cli

    args = ["train", str(store), "--algo", "td3bc", "--steps", "6", "--eval-every", "0",
            "--set", "hidden_dim=16", "--set", "batch_size=8", "--quiet"]  # fmt: skip
    for out, extra in (("cached", []), ("ram", ["--no-cache"])):
        result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / out), *extra])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "cached" / "cache" / VIEW / STAMP).is_file()
    assert not (tmp_path / "ram" / "cache").exists()
    left, right = (dict(_tensors(load_checkpoint(tmp_path / p / "checkpoint")[0]))
                   for p in ("cached", "ram"))  # fmt: skip
    assert all(torch.equal(left[k], right[k]) for k in left)
    both = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x"), "--no-cache",
                                    "--cache", str(tmp_path / "c")])  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.output
