"""The whole pipeline (`ssorl run`): data, split, IDM, relabel, agents, report.

`config` holds the schema, defaults and TOML reading; `runner` the stamps that
skip up-to-date stages; `stages` the stages and the order that chains them.
Python API: `PipelineConfig.from_toml` (or `from_dict`) and `run_pipeline`.
"""

from __future__ import annotations

from ssorl_train.pipeline.config import SCHEMA, SPLIT_NAME, PipelineConfig
from ssorl_train.pipeline.stages import run_pipeline

__all__ = ["SCHEMA", "SPLIT_NAME", "PipelineConfig", "run_pipeline"]
