"""Batches for training: random transitions (TD3+BC, IQL, CQL) and sub-trajectories (DT).

Steps are drawn by the kernels' samplers (`ssorl_data.sampler`): usable steps only,
uniformly or in proportion to `step_weight`, with one seeded generator, so a run's
batches depend only on its seed and how many were drawn; the generator's state is
checkpointed for bit-exact resumption. Observations are normalised and actions
mapped to [-1, 1] here, batch by batch, so algorithms never see raw units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ssorl_data.sampler import StepSampler, SubtrajectorySampler
from ssorl_train.dataset import TrainingData

Batch = dict[str, torch.Tensor]


class BatchSampler(ABC):
    """A batch source whose draws come from one `StepSampler` (`steps`), checkpointed with it."""

    steps: StepSampler

    @abstractmethod
    def sample(self) -> Batch:
        """The next batch, on the sampler's device."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.steps.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.steps.load_state_dict(state)


class TransitionSampler(BatchSampler):
    """Batches of (s, a, r, s', done): rows gathered from the data's arrays and normalised
    per batch, so no normalised copy of the data is made. On the CPU the rows come straight
    from the data's tensors (in RAM or memory-mapped from a training cache: the page cache
    holds the hot rows); another device gets a copy of the raw arrays first.
    Observations of any shape and dtype (uint8 frames) come out float32 [B, D], flattened.
    """

    def __init__(
        self, data: TrainingData, batch_size: int, seed: int, device: torch.device
    ) -> None:
        self.steps = StepSampler(
            data.step_start,
            data.lengths,
            step_mask=data.step_mask,
            weights=data.step_weight,
            seed=seed,
        )
        self.device = device
        self.normalizer = data.normalizer().to(device)

        def held(t: torch.Tensor) -> torch.Tensor:
            return t if device.type == "cpu" else t.to(device)

        self.observations = held(data.observations)  # [N+E, *obs_shape], store dtype
        self.actions = held(data.actions)  # [N, A] raw units
        self.rewards = held(data.rewards)
        self.terminations = held(data.terminations)
        self._episode = torch.empty(batch_size, dtype=torch.int64)  # [B] draw buffers
        self._step = torch.empty(batch_size, dtype=torch.int64)

    def _states(self, rows: torch.Tensor) -> torch.Tensor:
        """Normalised float32 [B, D] observations of rows `rows`."""
        obs = self.observations[rows]
        return self.normalizer.observations(obs.reshape(obs.shape[0], -1).float())

    def sample(self) -> Batch:
        self.steps.sample_into(self._episode, self._step)
        step = self._step.to(self.device, non_blocking=True)
        row = step + self._episode.to(self.device, non_blocking=True)  # row g + e of s_g
        return {
            "observations": self._states(row),  # [B, D]
            "actions": self.normalizer.to_unit(self.actions[step]),  # [B, A]
            "rewards": self.rewards[step],  # [B]
            "next_observations": self._states(row + 1),  # [B, D]
            "dones": self.terminations[step].float(),  # [B]
        }


class DTBatchSampler(BatchSampler):
    """Decision Transformer training batches: windows of `context` steps at a drawn usable step.

    The windows come from the data-side `ssorl_data.sampler.SubtrajectorySampler`
    (left-padded when the episode ends within them); this adds what training
    needs on top: the loss mask, which also drops the window's unusable steps
    (hidden or filtered actions), and the move to `device`.
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
        # raw actions, mapped to [-1, 1] per batch: a unit copy of the data's actions would
        # hold 4 * A bytes a step in RAM (2.4 GB at 100M steps of Hopper)
        self.windows = SubtrajectorySampler(
            data.observations,
            data.actions,
            data.step_start,
            data.lengths,
            context=context,
            batch_size=batch_size,
            # returns-to-go are linear in the rewards: scaling these scales those
            rewards=data.rewards * return_scale,
            mean=data.obs_mean,
            std=data.obs_std,
            step_mask=data.step_mask,
            weights=data.step_weight,
            seed=seed,
        )
        self.steps = self.windows.steps
        self.step_mask = data.step_mask
        self.normalizer = data.normalizer()
        self.device = device

    def sample(self) -> Batch:
        windows = self.windows.sample()
        # the same elementwise map as on the whole array; padding stays 0
        unit = self.normalizer.to_unit(windows.actions)
        windows = windows._replace(actions=unit.masked_fill_(~windows.mask[..., None], 0.0))
        # padding has timestep 0, a valid index that the window mask then drops
        episode_start = self.steps.step_start[self.windows.episode_index]  # [B]
        usable = self.step_mask[episode_start[:, None] + windows.timesteps]  # [B, K]
        batch = {
            name: t.to(self.device, non_blocking=True) for name, t in windows._asdict().items()
        }
        batch["loss_mask"] = (windows.mask & usable).to(self.device)
        return batch
