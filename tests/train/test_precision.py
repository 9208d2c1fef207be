"""bf16 training (issue 14): autocast forwards with fp32 weights, optimizer and losses; close
to fp32 on a fixed batch; resumes exactly in its own precision and refuses another one; the
metrics of a step stay tensors until the loop writes a log row."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ssorl_data.errors import InvalidArgumentError
from ssorl_train import loop
from ssorl_train.algos import make_algorithm, make_config
from ssorl_train.checkpoint import load_checkpoint
from ssorl_train.cli.main import cli
from ssorl_train.errors import CheckpointError, PipelineConfigError
from ssorl_train.pipeline.config import PipelineConfig
from tests.train.test_loop import SMALL, _run, _tensors

ALGOS = ["td3bc", "iql", "cql", "dt"]


def fixed_batch(algo: str, obs_dim: int = 3, act_dim: int = 2) -> dict[str, torch.Tensor]:
    """One seeded batch of the algorithm's kind and config batch size."""
    g = torch.Generator().manual_seed(11)
    b = make_config(algo, SMALL[algo]).batch_size
    if algo == "dt":
        k = SMALL["dt"]["context"]
        mask = torch.ones(b, k, dtype=torch.bool)
        mask[0, :2] = False  # a left-padded window
        return {"states": torch.randn(b, k, obs_dim, generator=g),
                "actions": torch.rand(b, k, act_dim, generator=g) * 2 - 1,
                "returns_to_go": torch.randn(b, k, generator=g),
                "timesteps": torch.randint(0, 100, (b, k), generator=g),
                "mask": mask, "loss_mask": mask.clone()}  # fmt: skip
    return {"observations": torch.randn(b, obs_dim, generator=g),
            "actions": torch.rand(b, act_dim, generator=g) * 2 - 1,
            "next_observations": torch.randn(b, obs_dim, generator=g),
            "rewards": torch.randn(b, generator=g), "dones": torch.zeros(b)}  # fmt: skip


def _first_update(algo: str, precision: str, steps: int = 2):
    torch.manual_seed(0)
    algorithm = make_algorithm(
        algo, make_config(algo, SMALL[algo]), 3, 2, torch.device("cpu"), precision=precision
    )
    batch = fixed_batch(algo)
    metrics = [algorithm.update(batch) for _ in range(steps)]
    return algorithm, metrics


@pytest.mark.parametrize("algo", ALGOS)
def test_bf16_losses_are_finite_and_close_to_fp32_on_a_fixed_batch(algo) -> None:
    _, fp32 = _first_update(algo, "fp32")
    bf16_algorithm, bf16 = _first_update(algo, "bf16")
    for step_fp32, step_bf16 in zip(fp32, bf16, strict=True):
        assert step_fp32.keys() == step_bf16.keys()
        for key, value in step_bf16.items():
            got, want = float(value), float(step_fp32[key])
            assert torch.isfinite(torch.tensor(got)), key
            # bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding, a few % through a net
            assert got == pytest.approx(want, rel=0.05, abs=0.02), key
    # fp32 master weights and optimizer moments: autocast only changes how forwards compute
    for _, tensor in _tensors(bf16_algorithm.state_dict()):
        assert not tensor.is_floating_point() or tensor.dtype == torch.float32


@pytest.mark.parametrize("algo", ALGOS)
def test_bf16_changes_the_computation(algo) -> None:
    """bf16 is not silently fp32: the same batch gives different (close) numbers."""
    fp32, _ = _first_update(algo, "fp32", steps=1)
    bf16, _ = _first_update(algo, "bf16", steps=1)
    pairs = zip(_tensors(fp32.state_dict()), _tensors(bf16.state_dict()), strict=True)
    differ = [not torch.equal(a, b) for (_, a), (_, b) in pairs if a.is_floating_point()]
    assert any(differ)


@pytest.mark.parametrize("algo", ["td3bc", "dt", "cql"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_exact_in_each_precision(algo, precision, make_data, tmp_path) -> None:
    data = make_data(episode_lengths=(20, 9, 25))
    _run(data, algo, tmp_path / "straight", steps=8, precision=precision)
    _run(data, algo, tmp_path / "resumed", steps=4, precision=precision)
    _run(data, algo, tmp_path / "resumed", steps=8, resume=True, precision=precision)
    straight, meta = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(tmp_path / "resumed" / "checkpoint")
    assert meta["loop"]["precision"] == precision  # the checkpoint records it
    pairs = dict(_tensors(straight))
    assert pairs.keys() == dict(_tensors(resumed)).keys()
    for name, tensor in _tensors(resumed):
        assert torch.equal(tensor, pairs[name]), name


def test_resuming_in_another_precision_is_refused(make_data, tmp_path) -> None:
    data = make_data()
    _run(data, "td3bc", tmp_path, steps=4, precision="bf16")
    with pytest.raises(CheckpointError, match=r"precision: 'bf16' -> 'fp32'"):
        _run(data, "td3bc", tmp_path, steps=8, resume=True)


def test_a_checkpoint_without_precision_resumes_as_fp32(make_data, tmp_path) -> None:
    """Checkpoints written before issue 14 have no loop.precision: they were fp32."""
    data = make_data()
    _run(data, "td3bc", tmp_path, steps=4)
    json_path = tmp_path / "checkpoint.json"
    document = json.loads(json_path.read_text())
    del document["meta"]["loop"]["precision"], document["meta"]["loop"]["compile"]
    json_path.write_text(json.dumps(document))
    assert _run(data, "td3bc", tmp_path, steps=6, resume=True)["steps"] == 6
    with pytest.raises(CheckpointError, match=r"precision: 'fp32' -> 'bf16'"):
        _run(data, "td3bc", tmp_path, steps=8, resume=True, precision="bf16")


def test_an_unknown_precision_is_refused_by_the_api_cli_and_toml(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="precision must be one of"):
        loop.LoopConfig(steps=1, precision="fp16")
    args = ["train", str(tmp_path), "--algo", "td3bc", "--steps", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*args, "--precision", "fp16"])
    assert result.exit_code == 2 and "'fp16' is not one of 'fp32', 'bf16'" in result.output
    raw = {"data": {"env_id": "Hopper-v5"}, "train": {"precision": "half"}}
    with pytest.raises(PipelineConfigError, match=r"\[train\] precision must be one of"):
        PipelineConfig.from_dict(raw)


def test_train_keys_left_at_their_default_hash_as_if_absent() -> None:
    """Pipelines stamped before issue 14 keep their stamps: the new keys at their defaults
    are not in the validated section, a non-default one is."""
    base = {"data": {"env_id": "Hopper-v5"}}
    absent = PipelineConfig.from_dict(base).train
    written = PipelineConfig.from_dict(base | {"train": {"precision": "fp32", "compile": False}})
    assert written.train == absent and "precision" not in absent
    bf16 = PipelineConfig.from_dict(base | {"train": {"precision": "bf16", "compile": True}})
    assert bf16.train == absent | {"precision": "bf16", "compile": True}


class _HostReads:
    """Counts the Python-level ways a tensor's value is read back to the host."""

    NAMES = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def counting(tensor, *args, _real=real, **kwargs):
                self.count += 1
                return _real(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counting)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_update_reads_no_tensor_back_and_returns_tensors(algo, precision, monkeypatch):
    torch.manual_seed(0)
    algorithm = make_algorithm(
        algo, make_config(algo, SMALL[algo]), 3, 2, torch.device("cpu"), precision=precision
    )
    batch = fixed_batch(algo)
    reads = _HostReads(monkeypatch)
    assert float(torch.ones(())) == 1.0 and reads.count == 1  # the counter sees a read
    reads.count = 0
    for _ in range(3):  # TD3+BC's delayed actor step included
        metrics = algorithm.update(batch)
    assert reads.count == 0
    tensors = {k for k, v in metrics.items() if isinstance(v, torch.Tensor)}
    assert tensors == set(metrics) - {"lr"}  # DT's lr is a Python number it computed


def test_the_loop_reads_metrics_only_when_it_writes_a_log_row(make_data, tmp_path, monkeypatch):
    data = make_data()
    seen = []
    real = loop._RunLog.log_train

    def log_train(self, step):
        seen.append({k: type(v) for k, v in self.sums.items()})
        return real(self, step)

    monkeypatch.setattr(loop._RunLog, "log_train", log_train)
    _run(data, "td3bc", tmp_path, steps=4, log_every=4)
    assert seen and all(kind is torch.Tensor for kind in seen[0].values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("algo", ALGOS)
def test_a_cuda_update_never_synchronises(algo) -> None:
    """torch's sync debug mode raises on any host synchronisation, C++ ones included."""
    device = torch.device("cuda")
    algorithm = make_algorithm(algo, make_config(algo, SMALL[algo]), 3, 2, device, precision="bf16")
    batch = {k: v.to(device) for k, v in fixed_batch(algo).items()}
    algorithm.update(batch)  # first calls may allocate and synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            algorithm.update(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
