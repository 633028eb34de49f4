"""Attributes of the pipeline's HDF5 files read back as the values that were written."""
from __future__ import annotations

import h5py
import numpy as np

from pipelines import h5attrs


def test_attributes_round_trip_and_text_that_only_looks_like_json_stays_text(tmp_path):
    values = {"params": {"b": [1, 2.5], "a": "x"}, "views": (3, 4), "fps": 25.0, "count": np.int64(7),
              "source": "[raw] video.avi", "versions": {"numpy": np.__version__}, "mean": np.float32(0.5)}
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        h5attrs.write(handle.attrs, values)
        assert handle.attrs["params"] == '{"a": "x", "b": [1, 2.5]}', "nested values are sorted JSON text"
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        read = h5attrs.read(handle.attrs)
    assert read == {"params": {"a": "x", "b": [1, 2.5]}, "views": [3, 4], "fps": 25.0, "count": 7,
                    "source": "[raw] video.avi", "versions": {"numpy": np.__version__}, "mean": 0.5}
    assert type(read["count"]) is int and type(read["fps"]) is float
