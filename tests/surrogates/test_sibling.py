"""Sibling anchoring: a GPU never measured, of the same chip family as a measured one and
close to it on spec, keeps that GPU's measured behaviour instead of the bare transfer model."""
from __future__ import annotations

import numpy as np
import pytest

import surrogates.transfer as transfer_mod
from profiling.hardware import load_catalog
from surrogates.model import SurrogateModel
from surrogates.transfer import spec_distance as _spec_distance


@pytest.fixture(scope="module")
def fitted(gpu_table, fast) -> SurrogateModel:
    """Trained on real A100, H100 and L40S GEMM and all-reduce rows."""
    return SurrogateModel("xgboost", dict(fast), max_rows=3000, random_state=0).fit(gpu_table)


@pytest.fixture(scope="module")
def shapes(gpu_table):
    g = gpu_table[(gpu_table["op"] == "gemm") & (gpu_table["hardware"] == "H100-SXM")]
    return g[["m", "n", "k", "dtype"]].sample(300, random_state=1).reset_index(drop=True)


def _clone(name: str, **update):
    return load_catalog().get("H100-SXM").model_copy(update={"name": name, "aliases": (), **update})


def test_a_renamed_copy_of_a_measured_gpu_is_priced_as_measured(fitted, shapes, monkeypatch):
    """An H100 spec sheet under another name gets H100's measured-model prediction (to 1e-9)
    and says which GPU it is anchored to; without anchoring the bare transfer model (capped
    by H100) is off by more than 1% on some shapes, so the check can fail."""
    h100 = fitted.predict("gemm", shapes, load_catalog().get("H100-SXM")).ms
    twin = fitted.predict("gemm", shapes, _clone("H100-twin"))
    np.testing.assert_allclose(twin.ms, h100, rtol=1e-9)
    assert "anchored to the measured H100-SXM (weight 1.00)" in twin.note
    monkeypatch.setattr(transfer_mod, "SIBLING_MIN_WEIGHT", 2.0)  # anchoring off
    bare = fitted.predict("gemm", shapes, _clone("H100-twin")).ms
    assert np.max(np.abs(bare / h100 - 1)) > 0.01
    assert "anchored" not in fitted.predict("gemm", shapes, _clone("H100-twin")).note


def test_another_chip_family_is_never_anchored(fitted, shapes, monkeypatch):
    """The same spec sheet labelled as another chip family (or none) is priced by the transfer
    model alone: exactly what it gets with anchoring switched off."""
    for arch in ("other-family", ""):
        gpu = _clone("H100-alien", arch=arch)
        p = fitted.predict("gemm", shapes, gpu)
        assert "anchored" not in p.note
        with monkeypatch.context() as mp:
            mp.setattr(transfer_mod, "SIBLING_MIN_WEIGHT", 2.0)
            np.testing.assert_array_equal(p.ms, fitted.predict("gemm", shapes, gpu).ms)


def test_anchoring_fades_with_spec_distance(fitted, shapes):
    """Raising only the memory bandwidth of an H100 copy moves its anchoring weight down
    from 1 as exp(-(d / scale)^2); memory-bound GEMMs get faster, none gets slower than H100."""
    h100 = fitted.predict("gemm", shapes, load_catalog().get("H100-SXM")).ms
    weights = []
    for f in (1.1, 1.43, 2.0):
        gpu = _clone("H100-fast-memory", mem_bw_gb_s=3350 * f)
        p = fitted.predict("gemm", shapes, gpu)
        w = float(p.note.rsplit("weight ", 1)[1].rstrip(")")) if "anchored" in p.note else 0.0
        assert w == pytest.approx(np.exp(-(np.log(f) / transfer_mod.SIBLING_SCALE) ** 2), abs=0.006)
        weights.append(w)
        assert np.all(p.ms <= h100 * (1 + 1e-9))  # dominance: more bandwidth is never slower
    assert weights[0] > weights[1] > weights[2]


def test_spec_distance_is_zero_for_twins_symmetric_and_infinite_across_families():
    """Twins are at 0; the distance is symmetric; across chip families, device kinds or a
    dtype one device lacks it is infinite; the farthest dtype of the rows counts."""
    cat = load_catalog()
    h100, h200, b200, b300 = (cat.get(n) for n in ("H100-SXM", "H200", "B200", "B300"))
    assert _spec_distance(h100, _clone("x"), ["bf16"], False) == 0.0
    assert _spec_distance(h200, h100, ["bf16"], False) == pytest.approx(_spec_distance(h100, h200, ["bf16"], False))
    assert _spec_distance(h200, h100, ["bf16"], False) == pytest.approx(
        np.hypot(np.log(4800 / 3350), 0.0), rel=1e-6)  # H200: same chip and power, faster memory
    assert np.isinf(_spec_distance(b200, h100, ["bf16"], False))
    assert np.isinf(_spec_distance(h100, _clone("y", arch=""), ["bf16"], False))
    assert _spec_distance(b300, b200, ["fp4"], False) > _spec_distance(b300, b200, ["bf16"], False)


def test_every_built_in_accelerator_names_its_chip_family():
    """Anchoring needs the family: every GPU/ASIC/CPU of the built-in catalog has one."""
    cat = load_catalog()
    missing = [h.name for h in cat if h.kind != "memory" and not h.arch]
    assert not missing, missing


def test_a_lower_power_cap_is_not_capped_by_the_full_power_gpu(fitted, shapes):
    """Same spec sheet as H100 but a 490 W board (outside H100's family, so no anchoring):
    H100's measurements no longer bound it from above (a power cap lowers sustained clocks),
    so it is priced at least as the 700 W copy and above it on some shapes."""
    full = fitted.predict("gemm", shapes, _clone("H100-full", arch="x")).ms
    capped = fitted.predict("gemm", shapes, _clone("H100-490W", arch="x", tdp_w=490)).ms
    assert np.all(capped >= full) and np.any(capped > full * 1.01)


def test_a_gpu_worse_on_every_spec_is_never_faster_for_gemms(fitted, shapes):
    """An H100 copy (of another family, so not anchored) with half the FLOP/s and power and
    800 GB/s (so it beats no measured GPU on every spec) is dominated by the measured H100:
    its GEMMs are floored at H100's prediction. Decode attention has no such floor (it cost
    accuracy leave-one-GPU-out)."""
    cat = load_catalog()
    h100 = cat.get("H100-SXM")
    slow = _clone("H100-half", arch="x", mem_bw_gb_s=800, tdp_w=350,
                  peak_tflops={k: v / 2 for k, v in h100.peak_tflops.items()})
    assert np.all(fitted.predict("gemm", shapes, slow).ms >= fitted.predict("gemm", shapes, h100).ms)
    assert "gemm" in transfer_mod.FLOOR_KINDS and "attn_decode" not in transfer_mod.FLOOR_KINDS
