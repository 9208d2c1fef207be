"""Decision Transformer: a causal transformer that predicts actions from returns-to-go.

Chen et al., "Decision Transformer: Reinforcement Learning via Sequence Modeling",
NeurIPS 2021, https://arxiv.org/abs/2106.01345. Defaults are the paper's D4RL
settings (context 20, 3 layers, 1 head, 128-wide embeddings, dropout 0.1, lr 1e-4
with 10k linear warm-up, returns scaled by 1/1000, target returns per environment;
AdamW weight decay 1e-4 and gradient clipping 0.25 as in its code and CORL's dt.py).
Weights start as in CORL's dt.py and nanoGPT (GPT-2's scheme: Linear and Embedding
weights N(0, 0.02), zero biases, LayerNorm at identity; like CORL, without nanoGPT's
smaller std for residual projections). Weight decay applies to the weights of Linear
layers only, none to biases, LayerNorm or embeddings, as minGPT's configure_optimizers
(CORL's dt.py decays every parameter; nanoGPT decays embeddings too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssorl_train.algos.base import Actor, Algorithm, Metrics
from ssorl_train.common import adam

# Chen et al.'s evaluation targets (the higher of their two per environment).
TARGET_RETURNS: dict[str, float] = {"hopper": 3600.0, "halfcheetah": 6000.0, "walker2d": 5000.0}


@dataclass(frozen=True)
class DTConfig:
    context: int = 20  # K, steps per input window
    hidden_dim: int = 128  # width of the token embeddings and blocks (block MLPs are 4x)
    n_layers: int = 3  # transformer blocks
    n_heads: int = 1  # attention heads per block
    dropout: float = 0.1  # dropout on embeddings, attention and residuals
    lr: float = 1e-4  # AdamW peak learning rate (of the one network: no actor_ prefix)
    weight_decay: float = 1e-4  # AdamW weight decay, on the weights of Linear layers only
    warmup_steps: int = 10_000  # linear learning-rate warm-up from lr / warmup_steps
    grad_clip: float = 0.25  # gradient norm clip
    batch_size: int = 64  # windows per update
    return_scale: float = 1e-3  # returns-to-go are multiplied by this (1/1000)
    max_episode_steps: int = 1000  # timestep embeddings cover [0, max_episode_steps)
    target_return: float | None = None  # evaluation target; None: TARGET_RETURNS by env id


def masked_action_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the [B, K] positions where mask is True, per action dim."""
    weight = mask.unsqueeze(-1).to(pred.dtype)  # [B, K, 1]
    return ((pred - target).square() * weight).sum() / (weight.sum() * pred.shape[-1]).clamp(min=1)


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation (module docstring), for `nn.Module.apply`."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: [weights of Linear layers, decayed], [every other parameter, not]."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) in linear], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in linear], "weight_decay": 0.0},
    ]


class Block(nn.Module):
    """Pre-norm transformer block whose attention takes a boolean 'may attend' mask."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0,
        )  # [B, H, T, d/H]
        x = x + self.residual_dropout(self.proj(attn.transpose(1, 2).reshape(b, t, d)))
        return x + self.mlp(self.norm2(x))


class DecisionTransformerModel(nn.Module):
    """Tokens (R_1, s_1, a_1, ..., R_K, s_K, a_K); a_t is predicted from the token of s_t."""

    def __init__(self, obs_dim: int, act_dim: int, c: DTConfig) -> None:
        super().__init__()
        self.timestep = nn.Embedding(c.max_episode_steps, c.hidden_dim)
        self.state = nn.Linear(obs_dim, c.hidden_dim)
        self.action = nn.Linear(act_dim, c.hidden_dim)
        self.rtg = nn.Linear(1, c.hidden_dim)
        self.embed_norm, self.embed_dropout = nn.LayerNorm(c.hidden_dim), nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            Block(c.hidden_dim, c.n_heads, c.dropout) for _ in range(c.n_layers)
        )
        self.out_norm = nn.LayerNorm(c.hidden_dim)
        self.head = nn.Sequential(nn.Linear(c.hidden_dim, act_dim), nn.Tanh())
        self.apply(init_weights)

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """[B,K,D], [B,K,A], [B,K], [B,K] int, [B,K] bool (False = padding) -> [B,K,A]."""
        b, k = mask.shape
        time = self.timestep(timesteps.clamp(max=self.timestep.num_embeddings - 1))
        tokens = torch.stack(
            [
                self.rtg(returns_to_go.unsqueeze(-1)) + time,
                self.state(states) + time,
                self.action(actions) + time,
            ],
            dim=2,
        )
        x = self.embed_dropout(self.embed_norm(tokens.reshape(b, 3 * k, -1)))  # [B, 3K, E]
        real = mask.repeat_interleave(3, dim=1)  # [B, 3K]
        causal = torch.ones(3 * k, 3 * k, dtype=torch.bool, device=x.device).tril()
        # attend to earlier real tokens; every token may attend to itself so that
        # all-padding rows stay finite (their outputs are never used)
        allowed = (causal & real[:, None, :]) | torch.eye(3 * k, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x = block(x, allowed.unsqueeze(1))
        return self.head(self.out_norm(x)[:, 1::3])  # state tokens -> actions


class DecisionTransformer(Algorithm):
    batch_kind = "subtrajectories"
    _state_names = ("model", "optimizer")
    _step_names = ("_step",)

    def __init__(
        self,
        config: DTConfig,
        obs_dim: int,
        act_dim: int,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        super().__init__(device, precision)
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.model = DecisionTransformerModel(obs_dim, act_dim, config).to(device)
        # the learning rate is a tensor filled each step, so a compiled optimizer step is
        # not recompiled for every value of the warm-up
        # (a float on the meta device, where checkpoint validation builds shapes only)
        lr = config.lr if device.type == "meta" else torch.tensor(config.lr, device=device)
        self.optimizer = adam(
            param_groups(self.model, config.weight_decay), lr, device, decoupled=True
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["optimizer"]
        if len(saved["param_groups"]) == 1:  # written when every parameter was decayed
            state = state | {"optimizer": self._regrouped(saved)}
        super().load_state_dict(state)
        for group in self.optimizer.param_groups:  # a float in checkpoints before issue 14
            group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=self.device)

    def _regrouped(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A one-group optimizer state (parameters in `model.parameters()` order) split into
        today's groups, each parameter keeping its moments."""
        (old,) = saved["param_groups"]
        position = {id(p): i for i, p in enumerate(self.model.parameters())}
        groups = [
            old
            | {
                "weight_decay": group["weight_decay"],
                "params": [old["params"][position[id(p)]] for p in group["params"]],
            }
            for group in self.optimizer.param_groups
        ]
        return saved | {"param_groups": groups}

    def update(self, batch: dict[str, torch.Tensor]) -> Metrics:
        c = self.config
        self.step += 1
        lr = c.lr * min(1.0, self.step / c.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"].fill_(lr)
        return self._step(batch) | {"lr": lr}

    def _step(self, batch: dict[str, torch.Tensor]) -> Metrics:
        self.model.train()
        with self.autocast():
            pred = self.model(
                batch["states"],
                batch["actions"],
                batch["returns_to_go"],
                batch["timesteps"],
                batch["mask"],
            ).float()
        loss = masked_action_mse(pred, batch["actions"], batch["loss_mask"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip, foreach=True)
        self.optimizer.step()
        return {"action_loss": loss.detach()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Action for a single-step context; evaluation uses `start_episodes` instead."""
        actor = self.start_episodes(obs.shape[0], None)
        return actor.act(obs)

    def start_episodes(self, num_envs: int, env_id: str | None) -> Actor:
        target = self.config.target_return
        if target is None:
            prefix = (env_id or "").split("-")[0].lower()
            target = TARGET_RETURNS.get(prefix, 0.0)
        return DTActor(self, num_envs, target)


class DTActor:
    """Keeps the last K (return-to-go, state, action) of each episode, left-padded."""

    def __init__(self, dt: DecisionTransformer, num_envs: int, target_return: float) -> None:
        c, dev = dt.config, dt.device
        self.dt, self.t = dt, 0
        self.states = torch.zeros(num_envs, c.context, dt.obs_dim, device=dev)
        self.actions = torch.zeros(num_envs, c.context, dt.act_dim, device=dev)
        self.returns_to_go = torch.zeros(num_envs, c.context, device=dev)
        self.timesteps = torch.zeros(num_envs, c.context, dtype=torch.int64, device=dev)
        self.mask = torch.zeros(num_envs, c.context, dtype=torch.bool, device=dev)
        self.current = torch.full((num_envs,), target_return * c.return_scale, device=dev)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        for buffer in (self.states, self.actions, self.returns_to_go, self.timesteps, self.mask):
            buffer.copy_(buffer.roll(-1, dims=1))
        self.states[:, -1], self.actions[:, -1] = obs, 0.0
        self.returns_to_go[:, -1] = self.current
        self.timesteps[:, -1], self.mask[:, -1] = self.t, True
        self.dt.model.eval()
        action = self.dt.model(
            self.states, self.actions, self.returns_to_go, self.timesteps, self.mask
        )[:, -1]
        self.actions[:, -1] = action
        self.t += 1
        return action

    def observe(self, rewards: torch.Tensor) -> None:
        self.current -= rewards.to(self.current) * self.dt.config.return_scale
