"""Pieces every algorithm and the loop share, written once: seeding, devices, target nets."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(device: str | None = None) -> torch.device:
    """The device asked for, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)


def mlp(in_dim: int, out_dim: int, hidden: int = 256, layers: int = 2) -> nn.Sequential:
    """ReLU MLP with `layers` hidden layers of width `hidden`."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        modules += [nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    modules.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*modules)


class Normalizer(nn.Module):
    """Maps raw observations to standardised ones and actions to and from [-1, 1].

    Algorithms see only normalised observations and unit actions; the data's
    statistics travel with every checkpoint as this module's buffers.
    """

    def __init__(
        self,
        obs_mean: torch.Tensor,
        obs_std: torch.Tensor,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
    ) -> None:
        super().__init__()
        self.register_buffer("obs_mean", obs_mean.clone().float())
        self.register_buffer("obs_std", obs_std.clone().float())
        self.register_buffer("action_centre", ((action_high + action_low) / 2).float())
        self.register_buffer("action_half_range", ((action_high - action_low) / 2).float())

    def observations(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def to_unit(self, actions: torch.Tensor) -> torch.Tensor:
        return (actions - self.action_centre) / self.action_half_range

    def from_unit(self, actions: torch.Tensor) -> torch.Tensor:
        return actions * self.action_half_range + self.action_centre
