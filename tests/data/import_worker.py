"""An import that never ends; the crash test SIGKILLs it before it commits.

Run as `python -m tests.data.import_worker STORE`: a new store is created and deterministic
episodes (tests.data.append_worker.episode) stream into its one transaction forever,
printing "ready" once the first batch is written.
"""

from __future__ import annotations

import itertools
import sys

from ssorl_data.io.importing import import_dataset
from ssorl_data.io.source import ImportSource
from tests.data.append_worker import ACT_DIM, OBS_DIM, episode
from tests.data.factories import spaces


def endless_source() -> ImportSource:
    def batches():
        for i in itertools.count():
            yield episode(i)
            if i == 0:
                print("ready", flush=True)

    return ImportSource("endless", *spaces((OBS_DIM,), (ACT_DIM,)), n_steps=1, batches=batches)


if __name__ == "__main__":
    import_dataset(endless_source(), sys.argv[1], chunk_steps=1000, progress=False)
