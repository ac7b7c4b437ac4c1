"""Plain CSV with a column map and unit conversion."""
from __future__ import annotations

import pandas as pd
import pytest

from profiling.errors import HermesError, InputError
from profiling.ingest import read_traces


def test_map_with_units_and_defaults(tmp_path):
    """lat_us:us -> ms, size:KB -> bytes; --op/--hardware fill constant fields."""
    f = tmp_path / "mine.csv"
    pd.DataFrame({"M": [64, 128], "N": [4096, 4096], "K": [4096, 4096], "lat_us": [50.0, 80.0]}).to_csv(f, index=False)
    res = read_traces(f, "csv", hardware="H100-SXM", column_map="latency=lat_us:us,m=M,n=N,k=K",
                      defaults={"op": "gemm", "dtype": "bf16"})
    assert res.table["latency_ms"].tolist() == [0.05, 0.08]
    assert res.table["m"].tolist() == [64, 128] and (res.table["op"] == "gemm").all()
    g = tmp_path / "coll.csv"
    pd.DataFrame({"size": [1024], "t_s": [0.0001]}).to_csv(g, index=False)
    res = read_traces(g, "csv", hardware="H100-SXM", column_map={"msg_bytes": "size:KB", "latency": "t_s:s"},
                      defaults={"op": "collective", "collective": "all_reduce", "world": 8})
    assert res.table["msg_bytes"].iloc[0] == 1024e3 and res.table["latency_ms"].iloc[0] == pytest.approx(0.1)


def test_bad_maps_and_columns(tmp_path):
    """A time field with a byte unit, a mapped column absent from the file, unknown columns: one line each."""
    f = tmp_path / "mine.csv"
    pd.DataFrame({"M": [64], "lat": [1.0]}).to_csv(f, index=False)
    with pytest.raises(HermesError, match="not a time unit"):
        read_traces(f, "csv", column_map="latency=lat:MB")
    with pytest.raises(InputError, match="not in the file: nope"):
        read_traces(f, "csv", column_map="latency=nope")
    with pytest.raises(InputError, match="unknown column"):
        read_traces(f, "csv")
