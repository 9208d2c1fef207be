"""The IDM network: an ensemble of tanh-squashed diagonal Gaussian MLPs, computed as one model.

Members are stacked along a leading dimension and every layer is one batched
matmul (`baddbmm`), so an ensemble of M costs one kernel launch per layer, not
M. With `shared_trunk` the hidden layers are shared and only the output heads
are per member: about M times less compute per step, at the price of members
that differ only in their heads. The module does no I/O.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# Recorded actions on the bounds would have infinite atanh; they are pulled in by this much.
SQUASH_EPS = 1e-4


class EnsembleLinear(nn.Module):
    """M independent linear layers: [M, B, in] -> [M, B, out] in one batched matmul."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class IdmEnsemble(nn.Module):
    """Flattened window [B, (k+2)*D] -> per-member Gaussian parameters [M, B, A] (atanh space)."""

    def __init__(
        self,
        in_features: int,
        act_dim: int,
        hidden: tuple[int, ...],
        members: int,
        dropout: float,
        shared_trunk: bool,
    ) -> None:
        super().__init__()
        self.members = members
        self.shared_trunk = shared_trunk
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            linear = (
                nn.Linear(width, size) if shared_trunk else EnsembleLinear(members, width, size)
            )
            layers += [linear, nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.head = EnsembleLinear(members, width, 2 * act_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, F] -> (mean, log_std), each [M, B, A], pre-tanh."""
        if self.shared_trunk:
            h = self.trunk(x).expand(self.members, -1, -1)  # [M, B, H], no copy
        else:
            h = self.trunk(x.expand(self.members, -1, -1))
        mean, log_std = self.head(h).chunk(2, dim=-1)
        # A soft clamp keeps gradients alive at the limits.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std


def squashed_nll(mean: Tensor, log_std: Tensor, action: Tensor) -> Tensor:
    """Per-member, per-sample NLL [M, B] of `action` [B, A] in [-1, 1] under tanh(N(mean, std))."""
    a = action.clamp(-1 + SQUASH_EPS, 1 - SQUASH_EPS)
    u = torch.atanh(a)
    z = (u - mean) * torch.exp(-log_std)
    log_prob = -0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)
    log_prob = log_prob - torch.log1p(-a.square())  # change of variables through tanh
    return -log_prob.sum(-1)
