"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss.

Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021,
https://arxiv.org/abs/2106.06860. Defaults are the paper's D4RL locomotion settings
(states normalised by the data's mean and std, as the paper does).
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
class TD3BCConfig:
    alpha: float = 2.5  # weight of the Q term relative to BC: lambda = alpha / mean|Q|
    actor_lr: float = 3e-4  # Adam learning rate of the actor (the policy network)
    critic_lr: float = 3e-4  # Adam learning rate of both critics
    batch_size: int = 256  # transitions per update
    gamma: float = 0.99  # discount
    tau: float = 0.005  # Polyak rate of the target networks
    policy_noise: float = 0.2  # std of the target policy smoothing noise (unit actions)
    noise_clip: float = 0.5  # the smoothing noise is clipped to +-noise_clip
    policy_freq: int = 2  # actor and targets update once every policy_freq critic updates
    hidden_dim: int = 256  # width of the hidden layers (two) of every network


def td3bc_actor_loss(
    q: torch.Tensor, policy_actions: torch.Tensor, data_actions: torch.Tensor, alpha: float
) -> torch.Tensor:
    """-lambda * mean Q(s, pi(s)) + MSE(pi(s), a), lambda = alpha / mean|Q| (not differentiated)."""
    lam = alpha / q.abs().mean().detach()
    return -lam * q.mean() + F.mse_loss(policy_actions, data_actions)


class TD3BC(Algorithm):
    _state_names = ("actor", "actor_target", "critic", "critic_target", "actor_opt", "critic_opt")
    _step_names = ("_critic_step", "_actor_step")

    def __init__(
        self,
        config: TD3BCConfig,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        super().__init__(device, precision)
        self.config = config
        self.actor = nn.Sequential(mlp(obs_dim, act_dim, config.hidden_dim), nn.Tanh()).to(device)
        self.critic = twin_critic(obs_dim, act_dim, config.hidden_dim, 2).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._actor_params = list(self.actor.parameters())
        self.actor_opt = adam(self._actor_params, config.actor_lr, device)
        self.critic_opt = adam(self.critic.parameters(), config.critic_lr, device)

    def update(self, batch: dict[str, torch.Tensor]) -> Metrics:
        self.step += 1
        metrics = self._critic_step(batch)
        if self.step % self.config.policy_freq == 0:
            metrics |= self._actor_step(batch["observations"], batch["actions"])
        return metrics

    def _critic_step(self, batch: dict[str, torch.Tensor]) -> Metrics:
        c = self.config
        obs, actions, next_obs = batch["observations"], batch["actions"], batch["next_observations"]
        with torch.no_grad(), self.autocast():
            noise = (torch.randn_like(actions) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_actions = (self.actor_target(next_obs).float() + noise).clamp(-1, 1)
            target_q = q_values(self.critic_target, next_obs, next_actions)
            target = batch["rewards"] + (1 - batch["dones"]) * c.gamma * target_q.min(0).values
        with self.autocast():
            q = q_values(self.critic, obs, actions)  # [2, B]
        critic_loss = F.mse_loss(q, target.expand_as(q), reduction="none").mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        return {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean()}

    def _actor_step(self, obs: torch.Tensor, actions: torch.Tensor) -> Metrics:
        """The delayed actor update (Q of the first critic only) and the target updates."""
        c = self.config
        with self.autocast():
            policy_actions = self.actor(obs).float()
            q_pi = q_values(self.critic, obs, policy_actions, members=1)[0]
        actor_loss = td3bc_actor_loss(q_pi, policy_actions, actions, c.alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        # gradients for the actor only: the critic's weight gradients would be discarded
        # (its optimizer zeroes them before its own backward), a third of its backward
        actor_loss.backward(inputs=self._actor_params)
        self.actor_opt.step()
        soft_update(self.critic_target, self.critic, c.tau)
        soft_update(self.actor_target, self.actor, c.tau)
        return {"actor_loss": actor_loss.detach()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)
