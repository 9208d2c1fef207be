"""Batches for training: random transitions (TD3+BC, IQL, CQL) and sub-trajectories (DT).

Both draw steps with one seeded `torch.Generator` into preallocated buffers, so a
run's batches depend only on its seed and how many were drawn; the generator's
state is checkpointed for bit-exact resumption. Observations are normalised and
actions mapped to [-1, 1] once, here, so algorithms never see raw units.
"""

from __future__ import annotations

import torch

from ssorl_train.dataset import TrainingData

Batch = dict[str, torch.Tensor]


class StepPicker:
    """Draws usable global steps, uniformly or in proportion to `step_weight`."""

    def __init__(self, data: TrainingData, batch_size: int, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.usable = torch.nonzero(data.step_mask).squeeze(1)  # [M] global steps
        self._cdf = None
        if data.step_weight is not None:
            self._cdf = torch.cumsum(data.step_weight[self.usable].double(), 0)
        self._uniform = torch.empty(batch_size, dtype=torch.float64)
        self._index = torch.empty(batch_size, dtype=torch.int64)

    def pick(self) -> torch.Tensor:
        """[B] int64 usable global steps, drawn with the sampler's own generator."""
        if self._cdf is None:
            torch.randint(
                len(self.usable), self._index.shape, generator=self.generator, out=self._index
            )
        else:
            torch.rand(
                self._uniform.shape,
                generator=self.generator,
                dtype=torch.float64,
                out=self._uniform,
            )
            self._uniform.mul_(self._cdf[-1])
            torch.searchsorted(self._cdf, self._uniform, right=True, out=self._index)
            self._index.clamp_(max=len(self.usable) - 1)
        return self.usable[self._index]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


class TransitionSampler(StepPicker):
    """Batches of (s, a, r, s', done) by fancy indexing tensors held on `device`."""

    def __init__(
        self, data: TrainingData, batch_size: int, seed: int, device: torch.device
    ) -> None:
        super().__init__(data, batch_size, seed)
        self.device = device
        normalizer = data.normalizer()
        self.observations = normalizer.observations(data.observations).to(device)  # [N+E, D]
        self.actions = normalizer.to_unit(data.actions).to(device)  # [N, A]
        self.rewards = data.rewards.to(device)
        self.dones = data.terminations.float().to(device)
        episode = torch.repeat_interleave(torch.arange(data.n_episodes), data.lengths)
        self.obs_row = (torch.arange(data.n_steps) + episode).to(device)  # [N] row of s_g

    def sample(self) -> Batch:
        step = self.pick().to(self.device, non_blocking=True)
        row = self.obs_row[step]
        return {
            "observations": self.observations[row],  # [B, D]
            "actions": self.actions[step],  # [B, A]
            "rewards": self.rewards[step],  # [B]
            "next_observations": self.observations[row + 1],  # [B, D]
            "dones": self.dones[step],  # [B]
        }


class SubtrajectorySampler(StepPicker):
    """Decision Transformer windows of `context` steps starting at a drawn step.

    A window starts at a usable step and is left-padded when the episode ends
    within it (`ssorl_data.ops.subtrajectories`). The loss mask also drops the
    window's unusable steps (hidden or filtered actions).
    """

    def __init__(
        self,
        data: TrainingData,
        batch_size: int,
        context: int,
        return_scale: float,
        seed: int,
        device: torch.device,
    ) -> None:
        from ssorl_data import ops  # only sequence models need the kernels

        super().__init__(data, batch_size, seed)
        self._ops, self.context, self.device = ops, context, device
        self.data = data
        self.unit_actions = data.normalizer().to_unit(data.actions).contiguous()
        self.rtg = torch.empty(data.n_steps, dtype=torch.float32)
        ops.returns_to_go(data.rewards, data.step_start, data.lengths, 1.0, self.rtg)
        self.rtg.mul_(return_scale)
        self.episode_of_step = torch.repeat_interleave(torch.arange(data.n_episodes), data.lengths)
        b, k = batch_size, context
        self._out = {
            "states": torch.empty(b, k, data.obs_dim),
            "actions": torch.empty(b, k, data.act_dim),
            "returns_to_go": torch.empty(b, k),
            "timesteps": torch.empty(b, k, dtype=torch.int64),
            "mask": torch.empty(b, k, dtype=torch.bool),
        }

    def sample(self) -> Batch:
        step = self.pick()
        episode = self.episode_of_step[step]
        start = step - self.data.step_start[episode]  # local step in its episode
        out = self._out
        self._ops.subtrajectories(
            self.data.observations,
            self.unit_actions,
            self.rtg,
            self.data.step_start,
            self.data.lengths,
            episode,
            start,
            self.data.obs_mean,
            self.data.obs_std,
            self.context,
            out["states"],
            out["actions"],
            out["returns_to_go"],
            out["timesteps"],
            out["mask"],
        )
        # real steps fill the last L positions: position p holds global step step + p - (K - L)
        real = torch.minimum(self.data.lengths[episode] - start, torch.tensor(self.context))
        offset = torch.arange(self.context) - (self.context - real)[:, None]  # [B, K]
        global_step = (step[:, None] + offset).clamp(0, self.data.n_steps - 1)
        loss_mask = out["mask"] & self.data.step_mask[global_step]
        batch = {name: t.to(self.device, non_blocking=True) for name, t in out.items()}
        batch["loss_mask"] = loss_mask.to(self.device)
        return batch
