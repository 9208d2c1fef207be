"""CQL: SAC whose critics are pushed down on out-of-data actions and up on the data's.

Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS 2020, https://arxiv.org/abs/2006.04779. Defaults are CORL's cql.py
for D4RL locomotion (CQL(H) with importance sampling, fixed alpha 10, automatic
entropy tuning, no Lagrange variant, no max-backup; the two are not implemented).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssorl_train.algos.base import Algorithm, q_values, twin_critic
from ssorl_train.common import mlp, soft_update


@dataclass(frozen=True)
class CQLConfig:
    cql_alpha: float = 10.0  # weight of the conservative penalty
    cql_n_actions: int = 10  # actions sampled per state for each proposal (uniform, pi(s), pi(s'))
    cql_temperature: float = 1.0  # temperature of the logsumexp over sampled actions
    actor_lr: float = 3e-5  # Adam learning rate of the actor (the policy network), and
    # of the entropy temperature alpha too (one rate for both, as CORL's policy_lr)
    critic_lr: float = 3e-4  # Adam learning rate of both critics
    batch_size: int = 256  # transitions per update
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target critics, every update
    hidden_dim: int = 256  # width of the hidden layers of every network
    n_layers: int = 3  # hidden layers of the actor and of each critic
    log_std_offset: float = -1.0  # added to the actor's raw log std, as CORL does


def cql_penalty(q_sampled: torch.Tensor, q_data: torch.Tensor, temperature: float) -> torch.Tensor:
    """mean(T * logsumexp(Q(s, a_i) / T over sampled a_i) - Q(s, a_data)); [B, M] and [B]."""
    return (temperature * torch.logsumexp(q_sampled / temperature, dim=1) - q_data).mean()


class TanhGaussianPolicy(nn.Module):
    """tanh(N(mu(s), sigma(s))) with the change-of-variables log density."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: int, layers: int, log_std_offset: float
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden, layers)
        self.log_std_offset = log_std_offset

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample [..., A] and its log density [...]."""
        mean, log_std = self.net(obs).chunk(2, -1)
        std = (log_std + self.log_std_offset).clamp(-20.0, 2.0).exp()
        u = mean + std * torch.randn_like(mean)
        log_prob = torch.distributions.Normal(mean, std).log_prob(u)
        # log(1 - tanh(u)^2), written stably
        log_prob = log_prob - 2 * (math.log(2) - u - F.softplus(-2 * u))
        return torch.tanh(u), log_prob.sum(-1)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs).chunk(2, -1)[0])


class CQL(Algorithm):
    _state_names = (
        "actor",
        "critic",
        "critic_target",
        "log_alpha",
        "actor_opt",
        "critic_opt",
        "alpha_opt",
    )

    def __init__(self, config: CQLConfig, obs_dim: int, act_dim: int, device: torch.device) -> None:
        super().__init__(device)
        self.config = config
        c = config
        self.actor = TanhGaussianPolicy(
            obs_dim, act_dim, c.hidden_dim, c.n_layers, c.log_std_offset
        ).to(device)
        self.critic = twin_critic(obs_dim, act_dim, c.hidden_dim, c.n_layers).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.actor_lr)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        obs, actions, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        batch_size, act_dim = actions.shape
        self.step += 1

        pi_actions, log_pi = self.actor(obs)
        alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        alpha = self.log_alpha.detach().exp()
        actor_loss = (alpha * log_pi - q_values(self.critic, obs, pi_actions).min(0).values).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            next_actions, _ = self.actor(next_obs)
            target_q = q_values(self.critic_target, next_obs, next_actions).min(0).values
            target = batch["rewards"] + (1 - batch["dones"]) * c.gamma * target_q
            # proposals for the penalty, each with its log density for importance sampling
            n = c.cql_n_actions
            rep_obs = obs.unsqueeze(1).expand(-1, n, -1)  # [B, n, D]
            rep_next = next_obs.unsqueeze(1).expand(-1, n, -1)
            uniform = torch.empty(batch_size, n, act_dim, device=obs.device).uniform_(-1, 1)
            current, log_current = self.actor(rep_obs)  # [B, n, A], [B, n]
            following, log_following = self.actor(rep_next)
        q = q_values(self.critic, obs, actions)  # [2, B]
        td_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
        sampled = torch.cat(
            [
                q_values(self.critic, rep_obs, uniform) - act_dim * math.log(0.5),
                q_values(self.critic, rep_obs, current) - log_current,
                q_values(self.critic, rep_obs, following) - log_following,
            ],
            dim=2,
        )  # [2, B, 3n]
        penalty = cql_penalty(sampled[0], q[0], c.cql_temperature) + cql_penalty(
            sampled[1], q[1], c.cql_temperature
        )
        critic_loss = td_loss + c.cql_alpha * penalty
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        return {
            "critic_loss": critic_loss.item(),
            "td_loss": td_loss.item(),
            "cql_penalty": penalty.item(),
            "actor_loss": actor_loss.item(),
            "alpha": alpha.item(),
            "q_mean": q.mean().item(),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic(obs)
