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

from ssorl_train.algos.base import Algorithm, q_values, twin_critic
from ssorl_train.common import mlp, soft_update


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
        return torch.distributions.Normal(self.mean(obs), std).log_prob(actions).sum(-1)


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

    def __init__(self, config: IQLConfig, obs_dim: int, act_dim: int, device: torch.device) -> None:
        super().__init__(device)
        self.config = config
        self.actor = GaussianPolicy(obs_dim, act_dim, config.hidden_dim).to(device)
        self.value = mlp(obs_dim, 1, config.hidden_dim).to(device)
        self.critic = twin_critic(obs_dim, act_dim, config.hidden_dim, 2).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=config.value_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        obs, actions = batch["observations"], batch["actions"]
        self.step += 1
        with torch.no_grad():
            target_q = q_values(self.critic_target, obs, actions).min(0).values  # [B]
            next_v = self.value(batch["next_observations"]).squeeze(-1)
            target = batch["rewards"] + (1 - batch["dones"]) * c.gamma * next_v
        advantage = target_q - self.value(obs).squeeze(-1)
        value_loss = expectile_loss(advantage, c.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        q = q_values(self.critic, obs, actions)  # [2, B]
        critic_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum() / 2
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)

        actor_loss = awr_loss(
            self.actor.log_prob(obs, actions), advantage, c.temperature, c.max_weight
        )
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        return {
            "value_loss": value_loss.item(),
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "advantage_mean": advantage.mean().item(),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.mean(obs)
