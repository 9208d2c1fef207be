"""IQL: implicit Q-learning, in-sample value learning with an expectile, then AWR.

Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022, https://arxiv.org/abs/2110.06169. Defaults are the paper's D4RL locomotion
settings (expectile 0.7, temperature 3.0), as in CORL's iql.py. Not included: the
paper's cosine decay of the actor's learning rate and its reward rescaling by
1000 / (max return - min return).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssorl_train.algos.base import Algorithm, Metrics
from ssorl_train.common import adam, mlp, q_values, soft_update, twin_critic


@dataclass(frozen=True)
class IQLConfig:
    expectile: float = 0.7  # V regresses towards this expectile of Q (0.5: the mean)
    temperature: float = 3.0  # beta of the advantage weights exp(beta * A)
    max_weight: float = 100.0  # advantage weights are clipped to this
    actor_lr: float = 3e-4  # Adam learning rate of the actor (the policy network)
    value_lr: float = 3e-4  # Adam learning rate of V
    critic_lr: float = 3e-4  # Adam learning rate of both critics (the Q networks)
    batch_size: int = 256  # transitions per update
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target critics
    hidden_dim: int = 256  # width of the hidden layers (two) of every network


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean(w * diff^2), w = `expectile` where diff = Q - V >= 0, else 1 - `expectile`."""
    weight = torch.where(diff < 0, 1 - expectile, expectile)
    return (weight * diff.square()).mean()


def awr_loss(
    log_prob: torch.Tensor, advantage: torch.Tensor, temperature: float, max_weight: float
) -> torch.Tensor:
    """Advantage-weighted regression: -mean(min(exp(beta * A), max_weight) * log pi(a|s))."""
    weight = torch.exp(temperature * advantage.detach()).clamp(max=max_weight)
    return -(weight * log_prob).mean()


class GaussianPolicy(nn.Module):
    """N(tanh(mlp(s)), diag(exp(log_std))) with a state-independent log std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.mean = nn.Sequential(mlp(obs_dim, act_dim, hidden), nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[B] log pi(a | s)."""
        std = self.log_std.clamp(-5.0, 2.0).exp()
        mean = self.mean(obs).float()  # the log density in float32 under autocast
        # no argument validation: its checks read tensors back (a host sync every step)
        normal = torch.distributions.Normal(mean, std, validate_args=False)
        return normal.log_prob(actions).sum(-1)


class IQL(Algorithm):
    _state_names = (
        "actor",
        "value",
        "critic",
        "critic_target",
        "actor_opt",
        "value_opt",
        "critic_opt",
    )
    _step_names = ("_step",)

    def __init__(
        self,
        config: IQLConfig,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        super().__init__(device, precision)
        self.config = config
        self.actor = GaussianPolicy(obs_dim, act_dim, config.hidden_dim).to(device)
        self.value = mlp(obs_dim, 1, config.hidden_dim).to(device)
        self.critic = twin_critic(obs_dim, act_dim, config.hidden_dim, 2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), config.actor_lr, device)
        self.value_opt = adam(self.value.parameters(), config.value_lr, device)
        self.critic_opt = adam(self.critic.parameters(), config.critic_lr, device)

    def update(self, batch: dict[str, torch.Tensor]) -> Metrics:
        self.step += 1
        return self._step(batch)

    def _step(self, batch: dict[str, torch.Tensor]) -> Metrics:
        c = self.config
        obs, actions = batch["observations"], batch["actions"]
        with torch.no_grad(), self.autocast():
            target_q = q_values(self.critic_target, obs, actions).min(0).values  # [B]
            next_v = self.value(batch["next_observations"]).squeeze(-1).float()
            target = batch["rewards"] + (1 - batch["dones"]) * c.gamma * next_v
        with self.autocast():
            advantage = target_q - self.value(obs).squeeze(-1).float()
        value_loss = expectile_loss(advantage, c.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        with self.autocast():
            q = q_values(self.critic, obs, actions)  # [2, B]
        critic_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum() / 2
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)

        with self.autocast():
            log_prob = self.actor.log_prob(obs, actions)
        actor_loss = awr_loss(log_prob, advantage, c.temperature, c.max_weight)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        return {
            "value_loss": value_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "advantage_mean": advantage.detach().mean(),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.mean(obs)
