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

from ssorl_train.algos.base import Algorithm, Metrics
from ssorl_train.common import adam, mlp, q_values, soft_update, twin_critic


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
        """Reparameterised sample [..., A] and its log density [...] (in float32)."""
        mean, log_std = self.net(obs).float().chunk(2, -1)
        std = (log_std + self.log_std_offset).clamp(-20.0, 2.0).exp()
        u = mean + std * torch.randn_like(mean)
        # no argument validation: its checks read tensors back (a host sync every step)
        log_prob = torch.distributions.Normal(mean, std, validate_args=False).log_prob(u)
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
    _step_names = ("_step",)

    def __init__(
        self,
        config: CQLConfig,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        super().__init__(device, precision)
        self.config = config
        c = config
        self.actor = TanhGaussianPolicy(
            obs_dim, act_dim, c.hidden_dim, c.n_layers, c.log_std_offset
        ).to(device)
        self.critic = twin_critic(obs_dim, act_dim, c.hidden_dim, c.n_layers).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self._actor_params = list(self.actor.parameters())
        self.actor_opt = adam(self._actor_params, c.actor_lr, device)
        self.critic_opt = adam(self.critic.parameters(), c.critic_lr, device)
        self.alpha_opt = adam([self.log_alpha], c.actor_lr, device)

    def update(self, batch: dict[str, torch.Tensor]) -> Metrics:
        self.step += 1
        return self._step(batch)

    def _step(self, batch: dict[str, torch.Tensor]) -> Metrics:
        c = self.config
        obs, actions, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        batch_size, act_dim = actions.shape

        with self.autocast():
            pi_actions, log_pi = self.actor(obs)
        # the temperature's loss -mean(log_alpha * (log pi + target entropy)) is linear in
        # log_alpha: its gradient is written directly. A second backward through the actor's
        # forward would not work compiled (one autograd graph per compiled segment)
        self.log_alpha.grad = -(log_pi.detach() + self.target_entropy).mean()
        self.alpha_opt.step()
        alpha = self.log_alpha.detach().exp()
        with self.autocast():
            q_pi = q_values(self.critic, obs, pi_actions).min(0).values
        actor_loss = (alpha * log_pi - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        # gradients for the actor only: the critic's weight gradients would be discarded
        # (its optimizer zeroes them before its own backward), a third of its backward
        actor_loss.backward(inputs=self._actor_params)
        self.actor_opt.step()

        n = c.cql_n_actions
        with torch.no_grad(), self.autocast():
            # one actor pass for s' (the target's action) and the penalty's proposals pi(s),
            # pi(s'), each with its log density for importance sampling: [B, 1 + 2n, .]
            states = torch.cat(
                [
                    next_obs[:, None],
                    obs[:, None].expand(-1, n, -1),
                    next_obs[:, None].expand(-1, n, -1),
                ],
                dim=1,
            )
            sampled_actions, log_sampled = self.actor(states)
            next_actions, current, following = sampled_actions.split([1, n, n], dim=1)
            _, log_current, log_following = log_sampled.split([1, n, n], dim=1)
            target_q = q_values(self.critic_target, next_obs, next_actions[:, 0]).min(0).values
            target = batch["rewards"] + (1 - batch["dones"]) * c.gamma * target_q
            uniform = torch.empty(batch_size, n, act_dim, device=obs.device).uniform_(-1, 1)
        # one critic pass for the data's action and the 3n proposals: [2, B, 1 + 3n]
        proposals = torch.cat([actions[:, None], uniform, current, following], dim=1)
        with self.autocast():
            q_all = q_values(self.critic, obs[:, None].expand(-1, 1 + 3 * n, -1), proposals)
        q = q_all[:, :, 0]  # [2, B]
        log_density = torch.cat(
            [
                log_current.new_full((batch_size, n), act_dim * math.log(0.5)),
                log_current,
                log_following,
            ],
            dim=1,
        )
        sampled = q_all[:, :, 1:] - log_density  # [2, B, 3n]
        td_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
        penalty = cql_penalty(sampled[0], q[0], c.cql_temperature) + cql_penalty(
            sampled[1], q[1], c.cql_temperature
        )
        critic_loss = td_loss + c.cql_alpha * penalty
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "td_loss": td_loss.detach(),
            "cql_penalty": penalty.detach(),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha,
            "q_mean": q.detach().mean(),
        }

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.deterministic(obs)
