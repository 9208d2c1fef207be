"""What every algorithm provides, and the state handling they share.

An algorithm works in normalised observations and actions in [-1, 1]; the loop
and evaluation translate (see `ssorl_train.common.Normalizer`). Its update is split into
step functions (`_step_names`) whose control flow depends on no Python value that changes
from step to step, so `compile` can hand each to `torch.compile` once; their metrics are
device tensors, so a step never waits for the device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Protocol

import torch

from ssorl_train.common import PRECISIONS, autocast
from ssorl_train.errors import AlgorithmConfigError

# scalar tensors on the device (or Python numbers known without the device, as DT's lr):
# the loop reads them at log time, never per step
Metrics = dict[str, torch.Tensor | float]


class Actor(Protocol):
    """Acts in a batch of parallel episodes; sequence models keep their history here."""

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """[n, D] normalised observations -> [n, A] actions in [-1, 1]."""
        ...

    def observe(self, rewards: torch.Tensor) -> None:
        """[n] rewards of the actions just taken."""
        ...


class Algorithm(ABC):
    """Base of the algorithms: `update(batch) -> metrics`, `act`, and state dicts.

    Subclasses list in `_state_names` the attributes (modules, optimizers, tensors)
    that make up their training state, and in `_step_names` the methods `compile` compiles;
    `step` counts updates. `precision` (`PRECISIONS`) is how forward passes compute.
    """

    config: Any  # the algorithm's frozen config dataclass
    batch_kind: ClassVar[Literal["transitions", "subtrajectories"]] = "transitions"
    _state_names: ClassVar[tuple[str, ...]] = ()
    _step_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: torch.device, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise AlgorithmConfigError(
                f"Expected precision in {list(PRECISIONS)!r}. Got {precision!r} instead."
            )
        self.device = device
        self.precision = precision
        self.step = 0

    def autocast(self) -> torch.autocast:
        """The context of this algorithm's forward passes (`ssorl_train.common.autocast`)."""
        return autocast(self.device, self.precision)

    def compile(self, backend: str = "inductor") -> None:
        """Replace each step function by its `torch.compile`d version, compiled on its first
        call: forward, backward (AOTAutograd; Dynamo breaks the graph at `backward()`) and
        optimizer step, with TorchInductor's C++ (CPU) or Triton (CUDA) kernels.

        Dynamo's caches are cleared first: they are keyed by the step functions' code and
        guarded on `self`, so every new algorithm adds entries, and past Dynamo's recompile
        limit (8) a process that trains run after run would silently run eagerly. An algorithm
        compiled earlier in the process recompiles once on its next step."""
        torch._dynamo.reset()
        for name in self._step_names:
            setattr(self, name, torch.compile(getattr(self, name), backend=backend))

    @abstractmethod
    def update(self, batch: dict[str, torch.Tensor]) -> Metrics:
        """One gradient step on a batch; returns scalar metrics (device tensors) to log."""

    @abstractmethod
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """[n, D] normalised observations -> [n, A] deterministic actions in [-1, 1]."""

    def start_episodes(self, num_envs: int, env_id: str | None) -> Actor:
        """An actor for `num_envs` fresh episodes; memoryless policies need no history."""
        return _MarkovActor(self)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"step": self.step}
        for name in self._state_names:
            value = getattr(self, name)
            state[name] = (
                value.detach().clone() if isinstance(value, torch.Tensor) else (value.state_dict())
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for name in self._state_names:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                with torch.no_grad():
                    value.copy_(state[name])
            else:
                value.load_state_dict(state[name])


class _MarkovActor:
    def __init__(self, algorithm: Algorithm) -> None:
        self.algorithm = algorithm

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.algorithm.act(obs)

    def observe(self, rewards: torch.Tensor) -> None:
        pass
