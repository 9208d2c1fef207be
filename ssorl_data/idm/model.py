"""The IDM network: an ensemble of tanh-squashed diagonal Gaussian MLPs, computed as one model.

Members are stacked along a leading dimension and every layer is one batched
matmul (`baddbmm`), so an ensemble of M costs one kernel launch per layer, not
M. With `shared_trunk` the hidden layers are shared and only the output heads
are per member: about M times less compute per step, at the price of members
that differ only in their heads. The module does no I/O.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ssorl_data.errors import InvalidArgumentError

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# How a step's uncertainty is read off the ensemble: which variance, and how the action
# dimensions are aggregated. "epistemic" is the variance of the members' actions (their
# disagreement); "total" is the variance of the members' mixture (the members' own variances
# plus their disagreement), the literature's usual choice. Runs made before the choice
# existed hold LEGACY_UNCERTAINTY.
UNCERTAINTY_DEFINITIONS = ("epistemic-mean", "epistemic-max", "total-mean", "total-max")
LEGACY_UNCERTAINTY = "epistemic-mean"
# total-mean ranked hidden-action errors best on all four shared datasets, two seeds each
# (AUROC for the worst 10%: 0.745-0.904 against 0.670-0.851 for epistemic-mean; README)
DEFAULT_UNCERTAINTY = "total-mean"
_QUADRATURE_NODES = 32  # for the moments of tanh(N(mean, std)) (see _tanh_moments)
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
    """Flattened window [B, (k+2)*D] -> per-member Gaussian parameters [M, B, A] (atanh space).

    With `delta_scale` [D], the difference of the window's last two states (s_{t+1} - s_t,
    normalised) times `delta_scale` is appended to the input: the action mostly shows in
    that difference, and scaled to unit variance it needs no learning to be found.
    """

    def __init__(
        self,
        in_features: int,
        act_dim: int,
        hidden: tuple[int, ...],
        members: int,
        dropout: float,
        shared_trunk: bool,
        delta_scale: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.members = members
        self.shared_trunk = shared_trunk
        # not in the state dict: it comes from config.json (IdmSpec.delta_std)
        self.register_buffer("delta_scale", delta_scale, persistent=False)
        layers: list[nn.Module] = []
        width = in_features + (0 if delta_scale is None else delta_scale.numel())
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
        if self.delta_scale is not None:
            d = self.delta_scale.numel()
            x = torch.cat([x, (x[:, -d:] - x[:, -2 * d : -d]) * self.delta_scale], dim=1)
        if self.shared_trunk:
            h = self.trunk(x).expand(self.members, -1, -1)  # [M, B, H], no copy
        else:
            h = self.trunk(x.expand(self.members, -1, -1))
        mean, log_std = self.head(h).chunk(2, dim=-1)
        # A soft clamp keeps gradients alive at the limits.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std


def squashed_nll(mean: Tensor, log_std: Tensor, action: Tensor, beta: float = 0.0) -> Tensor:
    """Per-member, per-sample NLL [M, B] of `action` [B, A] in [-1, 1] under tanh(N(mean, std)).

    With `beta` > 0, each dimension's term is weighted by its variance to the power beta,
    held constant (beta-NLL, Seitzer et al. 2022): plain NLL lets a member explain hard
    steps by a wide variance instead of fitting their mean, and beta = 1 turns the mean's
    gradient into that of the squared error. A training loss; the density is beta = 0.
    """
    a = action.clamp(-1 + SQUASH_EPS, 1 - SQUASH_EPS)
    u = torch.atanh(a)
    z = (u - mean) * torch.exp(-log_std)
    log_prob = -0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)
    log_prob = log_prob - torch.log1p(-a.square())  # change of variables through tanh
    if beta:
        log_prob = log_prob * torch.exp(2 * beta * log_std).detach()
    return -log_prob.sum(-1)


def check_uncertainty(definition: str) -> str:
    """`definition`, or InvalidArgumentError naming the known ones."""
    if definition not in UNCERTAINTY_DEFINITIONS:
        raise InvalidArgumentError(
            f"Unknown uncertainty definition {definition!r}. Expected one of "
            f"{', '.join(UNCERTAINTY_DEFINITIONS)}."
        )
    return definition


def _tanh_moments(mean: Tensor, log_std: Tensor) -> tuple[Tensor, Tensor]:
    """E[tanh(u)] and Var[tanh(u)] for u ~ N(mean, exp(log_std)^2), elementwise.

    Gauss-Legendre quadrature over the normal's quantiles: tanh is bounded, so this stays
    within about 1e-3 of Monte Carlo up to the largest std (e^2), where Gauss-Hermite
    (polynomial in u) is off by 0.1 and the delta method by more.
    """
    nodes, weights = np.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    quantiles = torch.special.ndtri(torch.as_tensor((nodes + 1) / 2, dtype=torch.float64))
    x = quantiles.to(mean.device, mean.dtype)
    w = torch.as_tensor(weights / 2, dtype=mean.dtype, device=mean.device)
    values = torch.tanh(mean.unsqueeze(-1) + torch.exp(log_std).unsqueeze(-1) * x)
    first = (values * w).sum(-1)
    second = (values.square() * w).sum(-1)
    return first, (second - first.square()).clamp_min(0.0)


def uncertainties(
    mean: Tensor, log_std: Tensor, action_half: Tensor, definitions: tuple[str, ...]
) -> Tensor:
    """Per-member Gaussian parameters [M, B, A] (pre-tanh) -> uncertainty [B, len(definitions)]
    in action units (squared), one column per name of UNCERTAINTY_DEFINITIONS."""
    for definition in definitions:
        check_uncertainty(definition)
    scale = action_half.square()
    per_dim: dict[str, Tensor] = {}
    if any(d.startswith("epistemic") for d in definitions):
        per_dim["epistemic"] = torch.tanh(mean).var(0, correction=0) * scale
    if any(d.startswith("total") for d in definitions):
        first, variance = _tanh_moments(mean, log_std)
        per_dim["total"] = (variance.mean(0) + first.var(0, correction=0)) * scale
    columns = []
    for definition in definitions:
        kind, aggregate = definition.split("-")
        values = per_dim[kind]
        columns.append(values.mean(-1) if aggregate == "mean" else values.amax(-1))
    return torch.stack(columns, dim=-1)
