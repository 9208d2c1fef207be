"""What every algorithm provides, and the state handling they share.

An algorithm works in normalised observations and actions in [-1, 1]; the loop
and evaluation translate (see `ssorl_train.common.Normalizer`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from ssorl_train.common import mlp


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
    that make up their training state; `step` counts updates.
    """

    config: Any  # the algorithm's frozen config dataclass
    batch_kind: ClassVar[Literal["transitions", "subtrajectories"]] = "transitions"
    _state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step = 0

    @abstractmethod
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on a batch; returns scalar metrics to log."""

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


def twin_critic(obs_dim: int, act_dim: int, hidden: int, layers: int) -> nn.ModuleList:
    """Two Q(s, a) MLPs; input is the concatenation [s, a]."""
    return nn.ModuleList(mlp(obs_dim + act_dim, 1, hidden, layers) for _ in range(2))


def q_values(critic: nn.ModuleList, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """[2, B] Q-values of both critics."""
    x = torch.cat([obs, actions], -1)
    return torch.stack([q(x).squeeze(-1) for q in critic])
