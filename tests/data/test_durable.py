"""`ssorl_data.durable.write_json`: whole files or the old one, paths as text, no silent str."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ssorl_data.durable import write_json


@pytest.mark.parametrize("sync", [False, True])
def test_write_json_replaces_the_file_whole_and_leaves_no_partial(tmp_path: Path, sync: bool):
    target = tmp_path / "stamp.json"
    target.write_text('{"old": 1}')
    write_json(target, {"store": tmp_path / "store", "scores": [1.5, 2]}, sync=sync)
    assert json.loads(target.read_text()) == {"store": str(tmp_path / "store"), "scores": [1.5, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stamp.json"]


def test_a_value_json_lacks_is_an_error_and_the_old_file_stays(tmp_path: Path):
    target = tmp_path / "result.json"
    target.write_text('{"old": 1}')
    with pytest.raises(TypeError, match="float32"):
        write_json(target, {"score": np.float32(0.5)})  # never written as the string "0.5"
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
