"""`--compile` (issue 14): torch.compile of each update step. Fast tests use the aot_eager
backend (Dynamo's capture and AOTAutograd, no code generation: seconds instead of minutes);
the slow ones compile with TorchInductor's C++ kernels, as `ssorl train --compile` does."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.utils

from ssorl_train.algos import make_algorithm, make_config
from ssorl_train.algos.base import Algorithm
from ssorl_train.checkpoint import load_checkpoint
from ssorl_train.common import adam
from tests.train.test_loop import SMALL, _run, _tensors
from tests.train.test_precision import fixed_batch

# torch's own warnings while compiling (the suite turns warnings into errors): Dynamo probes
# `.grad` of every tensor it traces, non-leaf ones included, and tracing the optimizer
# imports a torch module that uses the deprecated torch.jit.script_method
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning"
    ),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _algorithm(algo: str, precision: str = "fp32") -> Algorithm:
    torch.manual_seed(0)
    config = make_config(algo, SMALL[algo])
    return make_algorithm(algo, config, 3, 2, torch.device("cpu"), precision=precision)


@pytest.fixture
def aot_eager(monkeypatch) -> None:
    """The loop's `algorithm.compile()` with the aot_eager backend."""
    real = Algorithm.compile
    monkeypatch.setattr(Algorithm, "compile", lambda self: real(self, backend="aot_eager"))


# IQL and DT's resume under -m slow: each compile takes 10-30 s on this CPU
@pytest.mark.parametrize(
    "algo", ["td3bc", "cql", "dt", pytest.param("iql", marks=pytest.mark.slow)]
)
def test_a_compiled_step_matches_eager_and_is_compiled_once(algo) -> None:
    eager, compiled = _algorithm(algo), _algorithm(algo)
    compiled.compile(backend="aot_eager")
    batch = fixed_batch(algo)
    for step in range(6):  # TD3+BC's actor step and DT's warm-up included
        torch.manual_seed(step)  # the same noise, dropout and sampled actions for both
        want = eager.update(batch)
        torch.manual_seed(step)
        got = compiled.update(batch)
        assert want.keys() == got.keys()
        for key in want:
            torch.testing.assert_close(
                torch.as_tensor(got[key]), torch.as_tensor(want[key]), rtol=1e-5, atol=1e-6
            )
        if step == 1:
            graphs = _graphs()
            assert graphs > 0  # Dynamo captured the step functions
    assert _graphs() == graphs  # no recompilation after the first two steps
    for (_, a), (_, b) in zip(
        _tensors(eager.state_dict()), _tensors(compiled.state_dict()), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class _Doubling(Algorithm):
    """The smallest algorithm with a network, an optimizer and a step function (compiles in
    about a second): Dynamo guards on the identity of its optimizer."""

    _step_names = ("_step",)

    def __init__(self) -> None:
        super().__init__(torch.device("cpu"))
        self.net = torch.nn.Linear(3, 1)
        self.opt = adam(self.net.parameters(), 1e-3, self.device)

    def update(self, batch):
        return self._step(batch["x"])

    def _step(self, x):
        y = self.net(x).sum()
        self.opt.zero_grad(set_to_none=True)
        y.backward()
        self.opt.step()
        return {"y": y.detach()}

    def act(self, obs):
        return obs


@torch._dynamo.config.patch(recompile_limit=2)
def test_compiling_run_after_run_keeps_compiling() -> None:
    """Dynamo stops compiling a function after `recompile_limit` entries (8; 2 here) and runs
    it eagerly: without `compile`'s reset, a new algorithm each run would, past the limit."""
    batch = {"x": torch.arange(3.0)}
    added = []
    for _ in range(3):  # torch.compile alone: the third algorithm is not compiled
        algorithm, before = _Doubling(), _graphs()
        algorithm._step = torch.compile(algorithm._step, backend="aot_eager")
        algorithm.update(batch)
        added.append(_graphs() > before)
    assert added == [True, True, False]
    for _ in range(3):
        algorithm, before = _Doubling(), _graphs()
        algorithm.compile(backend="aot_eager")
        algorithm.update(batch)
        assert _graphs() > before


@pytest.mark.parametrize("algo", ["td3bc", pytest.param("dt", marks=pytest.mark.slow)])
def test_a_compiled_run_resumes_compiled_exactly(algo, aot_eager, make_data, tmp_path) -> None:
    data = make_data(episode_lengths=(20, 9, 25))
    _run(data, algo, tmp_path / "straight", steps=8, compile=True)
    _run(data, algo, tmp_path / "resumed", steps=4, compile=True)
    _run(data, algo, tmp_path / "resumed", steps=8, resume=True, compile=True)
    straight, meta = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(tmp_path / "resumed" / "checkpoint")
    assert meta["loop"]["compile"] is True
    pairs = dict(_tensors(straight))
    for name, tensor in _tensors(resumed):
        assert torch.equal(tensor, pairs[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3bc", "dt"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inductor_compiled_runs_resume_exactly_and_stay_close_to_eager(
    algo, precision, make_data, tmp_path
) -> None:
    """TorchInductor's kernels round differently from eager ones, so compiled and eager runs
    are close, not equal; a compiled run resumed compiled is equal to an uninterrupted one."""
    data = make_data(episode_lengths=(20, 9, 25))
    options = {"precision": precision}
    _run(data, algo, tmp_path / "eager", steps=8, **options)
    _run(data, algo, tmp_path / "straight", steps=8, compile=True, **options)
    _run(data, algo, tmp_path / "resumed", steps=4, compile=True, **options)
    _run(data, algo, tmp_path / "resumed", steps=8, resume=True, compile=True, **options)
    eager, _ = load_checkpoint(tmp_path / "eager" / "checkpoint")
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint")
    resumed, _ = load_checkpoint(tmp_path / "resumed" / "checkpoint")
    pairs, eager_pairs = dict(_tensors(straight)), dict(_tensors(eager))
    for name, tensor in _tensors(resumed):
        assert torch.equal(tensor, pairs[name]), name
    # Adam moves a weight by about lr whatever its gradient's size, so a rounding that flips
    # a tiny gradient's sign moves that weight by ~2 lr: compare the share of weights that
    # moved apart, not the largest difference
    share = 0.1 if precision == "fp32" else 0.5
    for name, tensor in _tensors(resumed):
        moments = "_opt/" in name or "/optimizer/" in name  # Adam states: not weights
        if tensor.is_floating_point() and "/algorithm/" in name and not moments:
            apart = ~torch.isclose(tensor, eager_pairs[name], rtol=1e-4, atol=1e-5)
            assert apart.float().mean() <= share, name
