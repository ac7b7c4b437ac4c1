"""Hardware catalog: the issue's devices with sourced numbers, trace names resolve, user
catalogs override, bad catalogs fail with file and field."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from profiling.errors import HermesError, InputError
from profiling.hardware import CATALOG_ENV, canonical_name, load_catalog

# Spelled as the issue spells them; the catalog must resolve each.
ISSUE_DEVICES = ["H100-SXM", "H200", "B200", "GB200", "B300", "GB300", "A100-80GB", "A30", "L40S",
                 "RTX PRO 6000", "MI300X", "MI350X", "MI355X", "TPU v5e", "TPU v6e", "Gaudi3",
                 "H100-PCIe", "A100-PCIe"]
# Prices quoted in ../shared/traces/README.md ($ per accelerator-hour).
README_PRICES = {"H100-SXM": (4.25, "CoreWeave"), "A100-80GB": (2.21, "CoreWeave"),
                 "H200": (6.31, "MIST"), "B200": (8.60, "MIST"), "GB300": (12.00, "MIST"),
                 "MI350X": (7.50, "MIST"), "MI355X": (9.50, "MIST"), "TPU v6e": (3.00, "MIST")}


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.mark.parametrize("name", ISSUE_DEVICES)
def test_issue_device_present_with_positive_numbers(cat, name):
    """Every device the issue lists resolves and has positive compute, memory, links, power and a sourced price."""
    d = cat.get(name)
    assert d.kind in ("gpu", "asic")
    assert d.peak_tflops.get("bf16", 0) > 0
    assert d.mem_capacity_gb > 0 and d.mem_bw_gb_s > 0 and d.tdp_w > 0
    assert d.intra_node_bw_gb_s > 0 and d.inter_node_bw_gb_s > 0 and d.pcie_bw_gb_s > 0
    assert d.price_per_hour > 0 and d.price_source.strip() and d.price_date.strip()
    assert d.devices_per_node >= 1


def test_every_gpu_has_compute_units_and_clock(cat):
    """Every GPU (NVIDIA and AMD) gives its SM/CU count and boost clock: the issue rate of the
    elementwise roofline term; ASICs and CPUs may leave them out (A100-balanced fallback)."""
    for d in cat:
        if d.kind == "gpu":
            assert d.compute_units > 0 and 1.0 < d.clock_ghz < 3.0, d.name
            assert d.issue_rate == pytest.approx(d.compute_units * d.clock_ghz * 1e9)


def test_server_cpus(cat):
    """At least two server CPUs, with cores, bf16/int8/fp32 peaks, DDR bandwidth, capacity and a price source."""
    cpus = [d for d in cat if d.kind == "cpu"]
    assert len(cpus) >= 2
    for c in cpus:
        assert c.cores > 0 and c.mem_bw_gb_s > 100 and c.mem_capacity_gb >= 256
        assert {"bf16", "int8", "fp32"} <= set(c.peak_tflops)
        assert c.price_per_hour > 0 and c.price_source
    assert {"Xeon-8480+", "EPYC-9654"} <= {c.name for c in cpus}
    assert cat.get("sapphire-rapids").cores == 56 and cat.get("genoa").cores == 96


def test_memory_nodes(cat):
    """Memory-kind devices (KV tiers) exist with capacity, bandwidth and latency but no compute."""
    mem = [d for d in cat if d.kind == "memory"]
    assert mem
    for m in mem:
        assert m.mem_capacity_gb > 0 and m.mem_bw_gb_s > 0 and m.intra_node_latency_us > 0
        assert not m.peak_tflops


def test_every_price_has_a_source(cat):
    """No device has an empty price source; a price not quoted by the README is a named list price or an estimate."""
    for d in cat:
        assert d.price_source.strip(), d.name
        assert d.price_date.strip(), d.name


@pytest.mark.parametrize("name", sorted(README_PRICES))
def test_readme_prices(cat, name):
    """Prices quoted in the traces README are used verbatim, citing their source."""
    price, source = README_PRICES[name]
    d = cat.get(name)
    assert d.price_per_hour == pytest.approx(price)
    assert source in d.price_source


def test_low_precision_never_slower(cat):
    """Where a device lists fp8 it is at least its bf16 rate, and fp4 at least its fp8 rate."""
    for d in cat:
        p = d.peak_tflops
        if "fp8" in p:
            assert p["fp8"] >= p["bf16"], d.name
        if "fp4" in p:
            assert p["fp4"] >= p["fp8"], d.name


def test_four_bit_weights_without_four_bit_math_run_at_16_bit_speed(cat):
    """H100 has no FP4/INT4 tensor cores: 4-bit weights are dequantized into bf16 MMAs
    (w4a16), so their peak is the bf16 one, not fp8's; B200 keeps its native FP4 rate."""
    h100, b200 = cat.get("H100-SXM"), cat.get("B200")
    assert h100.peak_flops("fp4") == h100.peak_flops("int4") == h100.peak_flops("bf16")
    assert b200.peak_flops("fp4") == b200.peak_tflops["fp4"] * 1e12 > b200.peak_flops("fp8")


def test_no_alias_shared_by_two_devices():
    """An alias names one device only (a later entry would silently steal it)."""
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "profiling/data/hardware.yaml").read_text())
    seen: dict[str, str] = {}
    for d in doc["devices"]:
        for a in (d["name"], *d.get("aliases", [])):
            key = canonical_name(a)
            assert seen.setdefault(key, d["name"]) == d["name"], f"{a} used by {seen[key]} and {d['name']}"


def _trace_hardware_names(traces: Path) -> set[str]:
    names = {p.name for p in (traces / "aiconfigurator/data").iterdir() if p.is_dir()}
    names |= {p.stem for p in traces.glob("aiconfigurator/*.yaml")} - {"b60", "l4"}
    names |= {p.name for p in (traces / "vidur/data/profiling/compute").iterdir()}
    names |= {p.name for p in (traces / "vidur/data/profiling/network").iterdir()}
    with open(traces / "splitwise/perf_model.csv") as f:
        names |= {r["hardware"] for r in csv.DictReader(f)}
    with open(traces / "aiconfigurator/silicon_sample.csv") as f:
        names |= {r["system"] for r in csv.DictReader(f)}
    mist = {p.stem for p in traces.glob("mist/hardware/*.yaml")}
    return names | (mist - {"cerebras_cs3", "etched", "groq_lpx", "tpu_v7"})


def test_trace_hardware_names_resolve(cat, traces_dir):
    """Every hardware name used in the shared traces (directories, CSV columns, spec files) resolves."""
    names = _trace_hardware_names(traces_dir)
    assert len(names) > 20
    missing = sorted(n for n in names if n not in cat)
    assert not missing, missing
    assert cat.get("h100-80gb-pcap").name != cat.get("h100-80gb").name  # power-capped kept apart
    assert cat.get("a30_single_gpu").name == "A30"


def _spec_files(traces: Path):
    for p in sorted(traces.glob("aiconfigurator/*.yaml")) + sorted(traces.glob("mist/hardware/*.yaml")):
        if p.stem in ("b60", "l4", "cerebras_cs3", "etched", "groq_lpx", "tpu_v7"):
            continue
        yield p, yaml.safe_load(p.read_text())["gpu"]


def test_specs_match_trace_spec_sheets(cat, traces_dir):
    """Bandwidth, capacity (bytes -> GB), bf16/fp8 peaks and power agree with the shared spec YAMLs."""
    checked = 0
    for path, g in _spec_files(traces_dir):
        d = cat.get(path.stem)
        where = f"{path.parent.name}/{path.name} vs {d.name}"
        assert d.mem_bw_gb_s == pytest.approx(g["mem_bw"] / 1e9, rel=1e-3), where
        assert d.mem_capacity_gb == pytest.approx(g["mem_capacity"] / 1e9, rel=2e-3), where
        bf16 = g.get("bfloat16_tc_flops") or g["float16_tc_flops"]
        assert d.peak_tflops["bf16"] == pytest.approx(bf16 / 1e12, rel=1e-3), where
        # fp8 only where the catalog lists it: MIST gives Ampere (no FP8 units) an int8-rate
        # fp8 and TPU v6e a placeholder one; the catalog leaves those out on purpose.
        if g.get("fp8_tc_flops") and "fp8" in d.peak_tflops:
            assert d.peak_tflops["fp8"] == pytest.approx(g["fp8_tc_flops"] / 1e12, rel=1e-3), where
        if g.get("power"):
            assert d.tdp_w == pytest.approx(g["power"]), where
        checked += 1
    assert checked >= 18


def _write(path: Path, devices: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"devices": devices}))
    return path


NEW_DEVICE = {"name": "MyNPU", "kind": "asic", "aliases": ["my_npu"], "peak_tflops": {"bf16": 100},
              "mem_capacity_gb": 64, "mem_bw_gb_s": 1000, "tdp_w": 300, "price_per_hour": 1.5,
              "price_source": "our contract, 2026", "price_date": "2026-01"}


def _h100_override(price: float) -> dict:
    d = load_catalog().get("H100-SXM").model_dump(mode="json")
    d.update(price_per_hour=price, price_source="negotiated, 2026")
    return d


def test_user_catalog_file_overrides_and_adds(tmp_path):
    """load_catalog(path) replaces a built-in device's price and adds a new device, keeping aliases."""
    f = _write(tmp_path / "mine.yaml", [_h100_override(2.0), NEW_DEVICE])
    cat = load_catalog(f)
    assert cat.get("h100_sxm").price_per_hour == 2.0
    assert cat.get("my_npu").peak_flops("bf16") == 100e12
    assert len(cat) == len(load_catalog()) + 1


def test_env_catalog_overrides_and_adds(tmp_path, monkeypatch):
    """$HERMES_CATALOG files are read like --catalog ones; an explicit file still wins over them."""
    env_file = _write(tmp_path / "env.yaml", [_h100_override(3.0), NEW_DEVICE])
    monkeypatch.setenv(CATALOG_ENV, str(env_file))
    cat = load_catalog()
    assert cat.get("H100-SXM").price_per_hour == 3.0 and "MyNPU" in cat
    later = _write(tmp_path / "later.yaml", [_h100_override(1.0)])
    assert load_catalog(later).get("h100").price_per_hour == 1.0


@pytest.mark.parametrize("device, field", [
    ({**NEW_DEVICE, "mem_bw_gb_s": -5}, "mem_bw_gb_s"),
    ({**NEW_DEVICE, "peak_tflops": {"bf16": 0}}, "peak_tflops"),
    ({k: v for k, v in NEW_DEVICE.items() if k != "tdp_w"}, "tdp_w"),
    ({**NEW_DEVICE, "kind": "quantum"}, "kind"),
    ({**NEW_DEVICE, "memory_gb": 64}, "memory_gb"),
])
def test_malformed_device_names_file_and_field(tmp_path, device, field):
    """A bad device gives an InputError naming the file, the device and the field."""
    f = _write(tmp_path / "bad.yaml", [device])
    with pytest.raises(InputError) as e:
        load_catalog(f)
    msg = str(e.value)
    assert "bad.yaml" in msg and "MyNPU" in msg and field in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text, why", [("devices: [unclosed", "not valid YAML"),
                                       ("gpus: []", "devices"), ("- 1\n- 2", "devices")])
def test_malformed_catalog_file(tmp_path, text, why):
    """A file that is not YAML or has no devices list is rejected with the file name."""
    f = tmp_path / "broken.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=why) as e:
        load_catalog(f)
    assert "broken.yaml" in str(e.value)


def test_missing_catalog_file_and_unknown_device(tmp_path):
    """A catalog path that does not exist and an unknown device name are clear HermesErrors."""
    with pytest.raises(InputError, match="not found"):
        load_catalog(tmp_path / "nope.yaml")
    with pytest.raises(HermesError, match="unknown hardware 'H900'"):
        load_catalog().get("H900")


def test_aiconfigurator_system_yaml_is_a_catalog_file(traces_dir, tmp_path):
    """A GPU the catalog lacks comes in from its AIConfigurator system YAML (Intel B60: 456 GB/s,
    98.3 bf16 TFLOP/s, 24 GiB, 200 W, PCIe links), with price 0 and a source saying why; the
    YAML of a GPU the catalog has updates its numbers but keeps its name, SM count and price."""
    aic = traces_dir / "aiconfigurator"
    b60 = load_catalog(aic / "b60.yaml").get("B60")
    assert (b60.mem_bw_gb_s, b60.peak_tflops["bf16"], b60.tdp_w) == pytest.approx((456.0, 98.304, 200.0))
    assert b60.mem_capacity_gb == pytest.approx(24 * 2**30 / 1e9)
    assert (b60.intra_node_bw_gb_s, b60.intra_node_latency_us) == pytest.approx((28.4, 2.0))
    assert b60.price_per_hour == 0 and "no price" in b60.price_source
    builtin = load_catalog().get("H100-SXM")
    sheet = tmp_path / "h100_sxm.yaml"
    doc = yaml.safe_load((aic / "h100_sxm.yaml").read_text())
    doc["gpu"]["mem_bw"] = 3.0e12  # a user's measured bandwidth
    sheet.write_text(yaml.safe_dump(doc))
    h = load_catalog(sheet).get("h100_sxm")
    assert h.name == "H100-SXM" and h.mem_bw_gb_s == pytest.approx(3000.0)
    assert (h.compute_units, h.price_per_hour, h.aliases) == (builtin.compute_units, builtin.price_per_hour,
                                                              builtin.aliases)
    del doc["gpu"]["mem_bw"]
    sheet.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="h100_sxm.yaml: AIConfigurator system YAML without gpu.mem_bw"):
        load_catalog(sheet)
