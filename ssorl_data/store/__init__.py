"""The chunked Zarr store of episodes: the only package that imports zarr.

Layout and rules are in DESIGN.md "The store" (paths in `ssorl_data.layout`,
attributes in `ssorl_data.metadata`). `trajectory_store` holds the front class
(open, create, reads, the commit), `writer` the append path, `splits` and
`relabels` the derived groups, `lock` the one-writer lock. Import from here.
"""

from __future__ import annotations

from ssorl_data.store.relabels import RelabelRun, open_relabel_for_worker
from ssorl_data.store.splits import Split
from ssorl_data.store.trajectory_store import STEP_KEYS, EpisodeTable, Mode, TrajectoryStore
from ssorl_data.store.writer import Compression

__all__ = [
    "STEP_KEYS",
    "Compression",
    "EpisodeTable",
    "Mode",
    "RelabelRun",
    "Split",
    "TrajectoryStore",
    "open_relabel_for_worker",
]
