"""Pieces every algorithm and the loop share, written once: seeding, devices, precision,
target nets, MLPs and the batched twin critic."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ssorl_data.idm.model import EnsembleLinear

# "fp32": every operation in float32. "bf16": forward passes under torch.autocast (matmuls in
# bfloat16) with float32 parameters, optimizer states, losses and targets.
PRECISIONS = ("fp32", "bf16")


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


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of `precision` on `device`: bfloat16 matmuls for "bf16", a no-op
    for "fp32". Its outputs are cast back with `.float()` before losses and targets."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def adam(
    params: Iterable[Any], lr: float, device: torch.device, *, decoupled: bool = False
) -> torch.optim.Optimizer:
    """Adam (AdamW when `decoupled`) with the fused kernel on CPU and CUDA: one call per step
    instead of a Python loop over parameters (3x less time in the optimizer on CPU)."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, fused=device.type in ("cpu", "cuda"))


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source, in one foreach call."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def mlp(in_dim: int, out_dim: int, hidden: int = 256, layers: int = 2) -> nn.Sequential:
    """ReLU MLP with `layers` hidden layers of width `hidden`."""
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        modules += [nn.Linear(dim, hidden), nn.ReLU()]
        dim = hidden
    modules.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*modules)


class BatchedMLP(nn.Module):
    """M ReLU MLPs of one shape evaluated together: each layer is one batched matmul
    (`ssorl_data.idm.model.EnsembleLinear`, as the IDM ensemble), so twin critics cost one
    kernel per layer. Built from M `mlp`s, it draws their initial weights exactly as they
    would (the same RNG calls, in the same order)."""

    def __init__(self, mlps: list[nn.Sequential]) -> None:
        super().__init__()
        self.members = len(mlps)
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in mlps]
        self.layers = nn.ModuleList(_stacked(list(column)) for column in zip(*linears, strict=True))

    def forward(self, x: torch.Tensor, members: int | None = None) -> torch.Tensor:
        """x [..., F] -> [M, ...] outputs of the first `members` (default all) MLPs; the last
        layer has one output, which is squeezed."""
        m = members or self.members
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1]).expand(m, -1, -1)
        for i, layer in enumerate(self.layers):
            # slice only for fewer members: a full slice still costs a zero-filled gradient
            # and a copy in backward (slice_backward), 5% of a TD3+BC update
            bias, weight = (layer.bias, layer.weight) if m == self.members else (
                layer.bias[:m], layer.weight[:m])  # fmt: skip
            h = torch.baddbmm(bias, h, weight)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.reshape(m, *lead)


def _stacked(linears: list[nn.Linear]) -> EnsembleLinear:
    """One EnsembleLinear holding these nn.Linear layers' weights ([M, in, out] layout)."""
    with torch.device("meta"):  # no init draws: the weights are the given layers'
        layer = EnsembleLinear(len(linears), linears[0].in_features, linears[0].out_features)
    layer.weight = nn.Parameter(torch.stack([lin.weight.detach().T for lin in linears]))
    layer.bias = nn.Parameter(torch.stack([lin.bias.detach()[None] for lin in linears]))
    return layer


def twin_critic(obs_dim: int, act_dim: int, hidden: int, layers: int) -> BatchedMLP:
    """Two Q(s, a) MLPs in one batched module; input is the concatenation [s, a]."""
    return BatchedMLP([mlp(obs_dim + act_dim, 1, hidden, layers) for _ in range(2)])


def q_values(
    critic: BatchedMLP, obs: torch.Tensor, actions: torch.Tensor, members: int | None = None
) -> torch.Tensor:
    """[M, ...] Q-values of the critics (all, or the first `members`), in float32."""
    return critic(torch.cat([obs, actions], -1), members).float()


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
