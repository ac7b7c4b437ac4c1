"""SurrogateModel: provenance, transfer to unseen GPUs, intervals, persistence."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from profiling.hardware import load_catalog
from surrogates.model import SurrogateModel


@pytest.fixture(scope="module")
def fitted(gpu_table, fast) -> SurrogateModel:
    """Fitted on A100 and H100 only, so L40S is a GPU it has never seen."""
    return SurrogateModel(params=fast, max_rows=4000).fit(gpu_table[gpu_table["hardware"] != "L40S"])


def _shapes(m):
    return pd.DataFrame({"m": m, "n": 4096, "k": 4096, "dtype": "bf16"})


def test_provenance_tags(fitted):
    """In-range shapes on a trained GPU are 'trained'; out-of-range m is 'extrapolated';
    a kind with no data falls back to the roofline."""
    h100 = load_catalog().get("H100-SXM")
    p = fitted.predict("gemm", _shapes([64, 10**8]), h100)
    assert list(p.provenance) == ["trained", "extrapolated"]
    v = pd.DataFrame({"batch": [8], "corpus": [10**6], "dim": [768], "topk": [10], "index": ["flat"]})
    fb = fitted.predict("vector_search", v, load_catalog().get("Xeon-8480+"))
    assert fb.provenance[0] == "roofline-fallback" and fb.ms[0] > 0


def test_shape_measured_only_on_another_gpu_is_extrapolated_with_a_wider_interval(gpu_table, vidur_table, fast):
    """A100 measured up to m = 512 only (its AIConfigurator grid and three Vidur models),
    H100 across the grid: m = 2048 is in the training range (H100's) but not A100's, so on
    A100 it is 'extrapolated' and its grid kernel gets the off-range (leave-models-out)
    interval instead of the narrow shape one; on H100 it is 'trained'."""
    g = gpu_table[(gpu_table["op"] == "gemm") & gpu_table["hardware"].isin(("A100-80GB", "H100-SXM"))]
    v = vidur_table[vidur_table["op"] == "gemm"]
    rows = pd.concat([g, v], ignore_index=True)
    rows = rows[(rows["hardware"] != "A100-80GB") | (rows["m"] <= 512)]
    model = SurrogateModel(params=fast, max_rows=4000).fit(rows)
    km, cat = model.kinds_["gemm"], load_catalog()
    grid = _shapes([64, 2048]).assign(stack="trtllm", kernel="torch_flow")  # the shape-grid kernel
    pa, ph = (model.predict("gemm", grid, cat.get(h)) for h in ("A100-80GB", "H100-SXM"))
    assert list(pa.provenance) == ["trained", "extrapolated"] and list(ph.provenance) == ["trained", "trained"]
    half = np.log(pa.hi_ms / pa.ms)
    assert np.isclose(half[0], km.q_seen) and np.isclose(half[1], km.off_range_quantile())
    assert km.off_range_quantile() > 1.5 * km.q_seen


def test_kernel_never_measured_on_the_gpu_is_extrapolated(fitted):
    """A kernel variant the GPU never ran in training is flagged 'extrapolated' even at an
    in-range shape (there is no measurement of it to interpolate); the engine kernel is not."""
    h100 = load_catalog().get("H100-SXM")
    assert list(fitted.predict("gemm", _shapes([64]), h100).provenance) == ["trained"]
    odd = _shapes([64]).assign(stack="trtllm", kernel="never-measured-kernel")
    assert list(fitted.predict("gemm", odd, h100).provenance) == ["extrapolated"]


def test_unseen_gpu_uses_spec_sheet_transfer(fitted, gpu_table):
    """L40S (no training data) is predicted by the transfer model, flagged and explained,
    and its GEMMs land far closer than a copy of the H100 latency would."""
    l40s = load_catalog().get("L40S")
    rows = gpu_table[(gpu_table["hardware"] == "L40S") & (gpu_table["op"] == "gemm")]
    p = fitted.predict("gemm", rows.drop(columns=["latency_ms"]), l40s)
    assert set(p.provenance) == {"extrapolated"}
    assert "spec sheet" in p.note and "spec sheet" in fitted.describe_hardware(l40s)
    y = rows["latency_ms"].to_numpy()
    mape = np.mean(np.abs(p.ms - y) / y)
    h100 = gpu_table[(gpu_table["hardware"] == "H100-SXM") & (gpu_table["op"] == "gemm")]
    copy = rows.merge(h100[["m", "n", "k", "latency_ms"]], on=["m", "n", "k"], suffixes=("", "_h100"))
    copy_mape = np.mean(np.abs(copy["latency_ms_h100"] - copy["latency_ms"]) / copy["latency_ms"])
    assert mape < 0.5 and mape < copy_mape, (mape, copy_mape)


def test_interval_coverage_on_held_out_shapes(gpu_table, fast):
    """Nominal 90% intervals cover 80-98% of GEMM rows whose shapes were never trained on."""
    g = gpu_table[(gpu_table["op"] == "gemm") & (gpu_table["hardware"] != "L40S")]
    test = g["m"].isin(sorted(g["m"].unique())[1::4])
    m = SurrogateModel(params=fast, max_rows=4000, transfer=False).fit(g[~test])
    cover = []
    for hw, part in g[test].groupby("hardware"):
        p = m.predict("gemm", part.drop(columns=["latency_ms"]), load_catalog().get(hw))
        y = part["latency_ms"].to_numpy()
        cover.append(np.mean((y >= p.lo_ms) & (y <= p.hi_ms)))
    assert 0.8 <= np.mean(cover) <= 0.98, cover


def test_save_load_round_trip(fitted, tmp_path):
    """A saved model reloads and predicts the same numbers; a wrong directory is a user error."""
    from profiling.errors import HermesError
    fitted.save(tmp_path / "m", {"note": "test"})
    back = SurrogateModel.load(tmp_path / "m")
    h100 = load_catalog().get("H100-SXM")
    np.testing.assert_allclose(back.predict_ms("gemm", _shapes([1, 512]), h100),
                               fitted.predict_ms("gemm", _shapes([1, 512]), h100))
    with pytest.raises(HermesError):
        SurrogateModel.load(tmp_path / "nowhere")


def test_sampling_is_stratified_by_kernel_variant(gpu_table):
    """Subsampling spreads rows over (hardware, dtype, kernel): a small stratum keeps all its
    rows and no stratum gets more than the equal share of what is left."""
    from surrogates.model import _sample
    g = gpu_table[gpu_table["op"] == "gemm"]
    small = g[g["hardware"] == "L40S"].head(100)
    t = pd.concat([g[g["hardware"] != "L40S"], small], ignore_index=True)
    s = _sample(t, 2100, seed=0)
    counts = s.groupby(["hardware", "dtype", "kernel"]).size()
    assert len(s) <= 2100 and counts.loc["L40S"].sum() == 100
    assert counts.drop("L40S", level=0).max() - counts.drop("L40S", level=0).min() <= 1


def test_unseen_gpu_is_never_slower_than_a_measured_gpu_it_dominates(fitted):
    """B200 (never trained on) has more bandwidth and bf16 FLOP/s than A100 and H100: its
    transfer predictions never exceed theirs. L40S has less bandwidth than both, so its
    predictions are the transfer model's alone (equal to a model without spec sheets)."""
    cat = load_catalog()
    shapes = _shapes([1, 16, 256, 4096, 65536])
    b200 = fitted.predict("gemm", shapes, cat.get("B200")).ms
    for seen in ("A100-80GB", "H100-SXM"):
        assert (b200 <= fitted.predict("gemm", shapes, cat.get(seen)).ms).all(), seen
    bare = copy.copy(fitted)
    bare.specs_ = {}
    l40s = cat.get("L40S")
    assert np.array_equal(fitted.predict("gemm", shapes, l40s).ms, bare.predict("gemm", shapes, l40s).ms)


def test_seen_params_override_only_the_seen_pipeline_of_their_kind(gpu_table, fast, tmp_path):
    """``seen_params`` gives GEMM's seen-GPU pipeline its own trees; GEMM's transfer
    pipeline and the other kinds keep ``params``; the override is in the saved manifest."""
    m = SurrogateModel(params=fast, max_rows=2000, seen_params={"gemm": {"n_estimators": 7}}).fit(gpu_table)
    trees = lambda pipe: pipe.named_steps["regressor"].model_.get_booster().num_boosted_rounds()  # noqa: E731
    assert trees(m.kinds_["gemm"].seen) == 7
    assert trees(m.kinds_["gemm"].transfer) == fast["n_estimators"] != 7
    assert trees(m.kinds_["collective"].seen) == fast["n_estimators"]
    m.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["seen_params"] == {"gemm": {"n_estimators": 7}}


def test_surrogate_pickled_before_a_catalog_field_still_loads():
    """A saved surrogate whose spec sheets predate a catalog field (compute_units and
    clock_ghz were added after bundles and MLflow models had been saved) loads with the
    field's default instead of failing on the first prediction; the other fields are kept."""
    import pickle

    spec = load_catalog().get("H100-SXM")
    old = spec.model_copy()
    for f in ("compute_units", "clock_ghz"):
        del old.__dict__[f]  # as unpickled from the older class
    back = pickle.loads(pickle.dumps(SurrogateModel(specs_={"H100-SXM": old})))
    got = back.specs_["H100-SXM"]
    assert got.compute_units == 0 and got.issue_rate == pytest.approx(spec.mem_bw / 13.4)
    assert got.model_dump(exclude={"compute_units", "clock_ghz"}) == spec.model_dump(exclude={"compute_units", "clock_ghz"})
