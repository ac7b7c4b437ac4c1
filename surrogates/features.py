"""Feature transformer: canonical trace rows -> the numbers a latency regressor sees.

``RooflineFeatures`` is the first step of every saved surrogate ``Pipeline``, so
training and simulation compute features identically. Column 0 of its output is always
``log t_roofline_ms``: the regressors after it learn ``log(latency / t_roofline)``, an
efficiency that transfers across GPUs because the spec sheet enters through the
roofline and the hardware columns.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from profiling.dtypes import dtype_bytes
from profiling.errors import HermesError
from profiling.hardware import HardwareCatalog, HardwareSpec, load_catalog
from profiling.roofline import roofline_ms

# Shape columns (log-scaled) each op kind's regressor sees.
SHAPE_FEATURES: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k"),
    "attn_prefill": ("batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "window"),
    "attn_decode": ("batch", "kv_len", "heads", "kv_heads", "head_dim", "window"),
    # batch x q_len = the rows (tokens) an elementwise kernel works on: with the row width
    # it sets the thread-block layout, which elements alone cannot tell. TP: Vidur measures
    # the same unsharded add/norm up to 40% apart across TP degrees (what the neighbouring
    # sharded kernels leave in L2), identically for every model.
    "elementwise": ("elements", "io_bytes", "batch", "q_len", "tp"),
    "collective": ("msg_bytes", "world", "nodes"),
    "vector_search": ("batch", "corpus", "dim", "topk", "nprobe"),
    "embedding": ("batch", "q_len", "params"),
    "step_overhead": ("batch",),
}
COLLECTIVE_CODE = {"all_reduce": 0, "all_gather": 1, "reduce_scatter": 2, "alltoall": 3, "send_recv": 4}
ROOFLINE_INPUTS = ("t_compute_ms", "t_memory_ms", "t_roofline_ms", "arith_intensity", "hw_peak_tflops",
                   "hw_mem_bw_gb_s", "hw_link_bw_gb_s", "hw_link_latency_us")
_TINY = 1e-9
ROOFLINE_FEATURES = ("log_t_roofline", "log_t_compute", "log_t_memory", "log_ai", "log_ai_over_ridge",
                     "l2_resident", "dtype_bytes", "kv_dtype_bytes", "stack", "kernel")
# Alpha-beta: per-hop latency term relative to the bandwidth roofline, and whether the
# ring runs over NVLink-class links or PCIe (both ratios transfer to an unseen GPU).
COLLECTIVE_EXTRA = ("collective_code", "log_alpha_over_beta", "log_link_over_pcie")
GEMM_TILE_FEATURES = ("m_waste64", "m_waste128", "n_waste128", "log_tiles128", "m_mod16")
# Thread blocks per SM (waves) and how full the last wave is: the part of tile and grid
# quantisation that depends on the GPU's SM count. Blocks: 128x128 output tiles (GEMM),
# batch x heads x 128-query tiles (prefill), sequences x KV heads (decode). They help every
# seen-GPU pipeline, and in the transfer model only GEMM's (attention's lost with them).
WAVE_FEATURES = ("log_waves", "wave_fill")
# Elementwise: token rows, row width (elements per row) and bytes per element (how many
# tensors the kernel streams); 0 where the row count is unknown.
ELEMENTWISE_FEATURES = ("log_tokens", "log_width", "bytes_per_element")
# Decode attention: the kernel's parallel work, sequences x KV heads (its CTA grid: few of
# them leave SMs idle), sequences x query heads, and the GQA group (query heads sharing one
# KV read). Trees find these products only through many splits on the raw shape columns.
# Seen-GPU pipeline only: in the transfer model they cost accuracy on a held-out GPU.
DECODE_FEATURES = ("log_seq_kv_heads", "log_seq_heads", "log_gqa_group")
# Shape columns of pipelines pickled before a kind's columns changed (the shipped bundle).
_LEGACY_SHAPE = {"elementwise": ("elements", "io_bytes")}
HARDWARE_FEATURES = ("log_peak", "log_mem_bw", "log_link_bw", "link_latency_us")
# Transfer-only columns. ``log_t_base`` is the spec-sheet prior the transfer regressor's
# target is relative to: the roofline for compute kinds; for collectives an alpha-beta
# time on the ring's link class, where a PCIe card without NVLink shares the host's
# PCIe bandwidth between the world/2 transfers a ring step runs at once.
TRANSFER_FEATURES = ("log_t_base",)
COLLECTIVE_TRANSFER = ("log_alpha_over_bus", "pcie_class")
# What the transfer learner must not see: its offset ``log_t_base``; stack and kernel codes
# (a held-out GPU's kernels are often ones no training GPU ran: the ``variant`` code
# averages those instead); absolute times, which place a slower or faster GPU's rows among
# other shapes of the training GPUs (hiding them lowered every kind's leave-one-GPU-out
# error); for collectives also every absolute size (alpha/bus-time ratio, world and kernel
# variant carry it).
TRANSFER_HIDDEN = ("stack", "kernel", "log_t_base", "log_t_roofline", "log_t_compute", "log_t_memory")
COLLECTIVE_TRANSFER_HIDDEN = ("log_ai", "log_ai_over_ridge", "log_msg_bytes", "log_alpha_over_beta",
                              "log_link_over_pcie")


@lru_cache(maxsize=4)
def _catalog(extra: tuple[str, ...]) -> HardwareCatalog:
    return load_catalog(*extra)


def attach_roofline(kind: str, frame: pd.DataFrame, hw: HardwareSpec) -> pd.DataFrame:
    """``frame`` (rows of one kind on one device) plus the roofline columns for ``hw``."""
    out = frame.copy()
    for dt, idx in _dtype_groups(out).items():
        part = out.loc[idx]
        shape = {c: part[c].to_numpy() for c in part.columns}
        feats = roofline_ms(kind, shape, dt[0], dt[1], hw)
        for c, v in feats.items():
            out.loc[idx, c] = v
    return out


def _dtype_groups(df: pd.DataFrame) -> dict[tuple[str, str | None], pd.Index]:
    dt = df["dtype"] if "dtype" in df else pd.Series("bf16", index=df.index)
    kv = df["kv_dtype"] if "kv_dtype" in df else pd.Series(None, index=df.index, dtype=object)
    dt = dt.where(dt.notna(), "bf16").astype(str)
    kv = kv.where(kv.notna(), "").astype(str)
    groups: dict[tuple[str, str | None], pd.Index] = {}
    for (a, b), idx in pd.DataFrame({"a": dt, "b": kv}).groupby(["a", "b"]).groups.items():
        groups[(a, b or None)] = idx
    return groups


def stack_code(stack: pd.Series | None, n: int) -> np.ndarray:
    """Serving stack as a number: 0 TensorRT-LLM / unknown, 1 vLLM, 2 Vidur profiles."""
    if stack is None:
        return np.zeros(n)
    s = stack.fillna("").astype(str).str.lower()
    return np.select([s.str.contains("vllm"), s.str.contains("vidur")], [1.0, 2.0], 0.0)


# Kernel variants seen in traces; 0 is the default (TensorRT-LLM's own kernels) that a
# prediction without a ``kernel`` column gets.
_KERNEL_KEYS = (("block", 1), ("_wo", 2), ("/sq", 3), ("fa2", 4), ("fa3", 5), ("fa4", 6),
                ("trtllmdecode", 7), ("trtllmprefill", 7), ("fidecode", 8), ("fiprefill", 8),
                ("triton", 9), ("vllm_flash_attn", 10), ("flashinfer", 8), ("custom_graph", 11),
                ("custom_eager", 12), ("nccl", 13), ("cutlass", 14), ("torch.nn", 15), ("vllm_default", 15))


def kernel_code(kernel: pd.Series | None, n: int) -> np.ndarray:
    """Kernel family as a number (first matching key); 0 when unknown or absent."""
    if kernel is None:
        return np.zeros(n)
    k = kernel.fillna("").astype(str).str.lower()
    out = np.zeros(n)
    for key, code in reversed(_KERNEL_KEYS):  # earlier keys win
        out = np.where(k.str.contains(key, regex=False).to_numpy(), float(code), out)
    return out


def variant_keys(kind: str, X: pd.DataFrame) -> pd.Series:
    """Exact kernel identity of each row: backend (stack without version) + kernel, plus the
    op ``name`` for elementwise rows, whose shapes alone cannot tell rmsnorm from rope."""
    n = len(X)
    get = lambda c: (X[c].fillna("").astype(str).str.lower() if c in X  # noqa: E731
                     else pd.Series([""] * n, index=X.index))
    key = get("stack").str.split(" ").str[0] + "|" + get("kernel")
    if kind == "elementwise":
        fam = elementwise_family(get("name"))
        key = key + "|" + fam + _flavour(fam, X)
    return key


# Tensors an elementwise op of these families streams per output element in its usual
# flavour (a gated activation reads two halves and writes one; a residual add two addends).
# Another flavour is its own kernel variant: a plain GELU (2 tensors) or a parallel-residual
# add of attention, MLP and residual (4), as in phi-2. Priced as the usual flavour (one
# variant) a plain GELU came out 1.9x too slow on a model never seen: its bytes per element
# put it among other families' leaves; as its own variant it gets the stream prior when
# never trained on, and the gated models' errors barely move.
_EW_USUAL_TENSORS = {"act": 3, "add": 3}


def _flavour(fam: pd.Series, X: pd.DataFrame) -> pd.Series:
    """'|<k>t' where an act/add row streams k tensors per element other than the usual."""
    out = pd.Series("", index=X.index)
    usual = fam.map(_EW_USUAL_TENSORS)
    if not usual.notna().any() or "io_bytes" not in X or "elements" not in X:
        return out
    dt = X["dtype"].fillna("bf16") if "dtype" in X else pd.Series("bf16", index=X.index)
    b = dt.map({d: dtype_bytes(d) for d in dt.unique()})  # per distinct dtype, not per row
    k = (X["io_bytes"].astype(float) / (X["elements"].astype(float).clip(lower=1.0) * b)).round()
    other = usual.notna() & k.notna() & (k != usual)
    return out.where(~other, "|" + k.fillna(0).astype(int).astype(str) + "t")


# Elementwise op names (Vidur's and ``profiling.operators``') -> kernel family.
_EW_FAMILIES = (("kv_cache", "kv_save"), ("norm", "norm"), ("rope", "rope"), ("act", "act"),
                ("add", "add"), ("emb", "emb"))


def elementwise_family(names: pd.Series) -> pd.Series:
    """Kernel family of an elementwise op name (first matching key; '' when unknown)."""
    out = pd.Series("", index=names.index)
    for key, fam in reversed(_EW_FAMILIES):  # earlier keys win
        out = out.where(~names.str.contains(key, regex=False), fam)
    return out


def elementwise_tokens(X: pd.DataFrame) -> np.ndarray:
    """Rows (tokens) of each elementwise op, batch x q_len; NaN where not given."""
    n = len(X)
    col = lambda c, d: (X[c].to_numpy(dtype=float) if c in X else np.full(n, d))  # noqa: E731
    return np.nan_to_num(col("batch", 1.0), nan=1.0) * col("q_len", np.nan)


def elementwise_features(X: pd.DataFrame) -> list[np.ndarray]:
    """``ELEMENTWISE_FEATURES`` of elementwise rows."""
    n = len(X)
    el = np.maximum(X["elements"].to_numpy(dtype=float), 1.0) if "elements" in X else np.ones(n)
    io = X["io_bytes"].to_numpy(dtype=float) if "io_bytes" in X else np.full(n, np.nan)
    tok = elementwise_tokens(X)
    known = np.isfinite(tok) & (tok > 0)
    t = np.where(known, tok, 1.0)
    return [np.where(known, np.log(t), 0.0), np.where(known, np.log(np.maximum(el / t, 1.0)), 0.0),
            np.nan_to_num(io / el, nan=0.0)]


def decode_features(col) -> list[np.ndarray]:
    """``DECODE_FEATURES`` from the shape columns (``col(name)``; 0 where one is missing)."""
    b, h, kvh = col("batch"), col("heads"), col("kv_heads")
    return [np.log1p(np.nan_to_num(v, nan=0.0)) for v in (b * kvh, b * h, h / np.maximum(kvh, 1.0))]


def _tiles128(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """128x128 output tiles of an m x n GEMM (m, n >= 1)."""
    return np.ceil(m / 128) * np.ceil(n / 128)


def _tile_features(X: pd.DataFrame, n: int) -> list[np.ndarray]:
    """GEMM tile quantisation: padding waste of m and n to 64/128-wide tiles, tile count."""
    m = np.maximum(X["m"].to_numpy(dtype=float), 1.0) if "m" in X else np.ones(n)
    nn = np.maximum(X["n"].to_numpy(dtype=float), 1.0) if "n" in X else np.ones(n)
    waste = lambda v, t: np.ceil(v / t) * t / v  # noqa: E731
    return [waste(m, 64), waste(m, 128), waste(nn, 128), np.log(_tiles128(m, nn)), m % 16]


def wave_features(kind: str, X: pd.DataFrame, units: np.ndarray, n: int) -> list[np.ndarray]:
    """``WAVE_FEATURES`` of ``kind``'s rows on GPUs of ``units`` SMs (NaN without a count)."""
    col = lambda c: (np.nan_to_num(X[c].to_numpy(dtype=float), nan=1.0) if c in X  # noqa: E731
                     else np.ones(n))
    if kind == "gemm":
        blocks = _tiles128(np.maximum(col("m"), 1), np.maximum(col("n"), 1))
    elif kind == "attn_prefill":
        blocks = col("batch") * col("heads") * np.ceil(np.maximum(col("q_len"), 1) / 128)
    else:
        blocks = col("batch") * col("kv_heads")
    waves = np.maximum(blocks, 1.0) / units
    return [np.log(waves), waves / np.ceil(waves)]


class RooflineFeatures(TransformerMixin, BaseEstimator):
    """Canonical rows of one op ``kind`` -> feature matrix (column 0 = log t_roofline_ms).

    ``hardware_features=False`` leaves out the absolute spec numbers (peak, bandwidths),
    keeping only roofline-normalised ones, and appends the transfer columns (the prior
    ``log_t_base``; ``transfer_columns`` says which columns the learner may see): the
    transfer model for GPUs never seen in training (absolute numbers let trees memorise
    the few training GPUs).

    Rows need a ``hardware`` name the catalog knows unless they already carry the
    roofline columns (``profiling.roofline.add_roofline_features`` or ``attach_roofline``).
    """

    def __init__(self, kind: str = "gemm", hardware_features: bool = True,
                 catalog_files: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.hardware_features = hardware_features
        self.catalog_files = catalog_files

    def fit(self, X: pd.DataFrame, y=None) -> "RooflineFeatures":
        if self.kind not in SHAPE_FEATURES:
            raise HermesError(f"no surrogate features for operator kind '{self.kind}'")
        # Vocabulary of kernel variants seen in training; an unseen one codes as -1.
        self.variants_ = sorted(set(variant_keys(self.kind, X))) if isinstance(X, pd.DataFrame) else []
        self.decode_features_ = self.kind == "attn_decode" and self.hardware_features
        self.feature_names_ = self.get_feature_names_out()
        self.n_features_in_ = X.shape[1]
        # Fitted with the transfer columns (pipelines pickled before they existed lack this).
        self.with_prior_ = not self.hardware_features
        # Elementwise prior = roofline + issue time (pipelines pickled before: roofline only).
        self.issue_prior_ = self.kind == "elementwise" and not self.hardware_features
        self.wave_features_ = self._wave_kind()
        # Shape columns fitted on (pickles from before the elementwise token columns lack it).
        self.shape_columns_ = SHAPE_FEATURES[self.kind]
        return self

    def _shape_columns(self) -> tuple[str, ...]:
        if hasattr(self, "shape_columns_"):
            return self.shape_columns_
        if hasattr(self, "feature_names_"):  # fitted and pickled before shape_columns_ existed
            return _LEGACY_SHAPE.get(self.kind, SHAPE_FEATURES[self.kind])
        return SHAPE_FEATURES[self.kind]

    def _decode_features(self) -> bool:
        if hasattr(self, "decode_features_"):
            return self.decode_features_
        # Unfitted: current columns; fitted and pickled before they existed: without them.
        return self.kind == "attn_decode" and self.hardware_features and not hasattr(self, "feature_names_")

    def _wave_kind(self) -> bool:
        return self.kind == "gemm" or (self.kind in ("attn_prefill", "attn_decode") and self.hardware_features)

    def _wave_features(self) -> bool:
        if hasattr(self, "wave_features_"):
            return self.wave_features_
        # Unfitted: current columns; fitted and pickled before they existed: without them.
        return self._wave_kind() and not hasattr(self, "feature_names_")

    def _token_features(self) -> bool:
        return self.kind == "elementwise" and "q_len" in self._shape_columns()

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        shape = [f"log_{c}" for c in self._shape_columns()]
        extra = list(COLLECTIVE_EXTRA) if self.kind == "collective" else []
        extra += ["variant"] + (list(GEMM_TILE_FEATURES) if self.kind == "gemm" else [])
        extra += list(ELEMENTWISE_FEATURES) if self._token_features() else []
        extra += list(DECODE_FEATURES) if self._decode_features() else []
        extra += list(WAVE_FEATURES) if self._wave_features() else []
        hw = list(HARDWARE_FEATURES) if self.hardware_features else []
        if not self.hardware_features:
            extra += list(TRANSFER_FEATURES) + (list(COLLECTIVE_TRANSFER) if self.kind == "collective" else [])
        return np.array([*ROOFLINE_FEATURES, *hw, *shape, *extra], dtype=object)

    def transfer_columns(self) -> tuple[int, tuple[int, ...]]:
        """(base column, columns the transfer learner sees) of the transfer feature set."""
        names = list(self.get_feature_names_out())
        hidden = TRANSFER_HIDDEN + (COLLECTIVE_TRANSFER_HIDDEN if self.kind == "collective" else ())
        return names.index("log_t_base"), tuple(i for i, n in enumerate(names) if n not in hidden)

    def _with_roofline(self, X: pd.DataFrame) -> pd.DataFrame:
        need = ("t_issue_ms",) if getattr(self, "issue_prior_", False) else ()
        need += ("hw_compute_units",) if self._wave_features() else ()  # NaN allowed: no SM count
        if "t_roofline_ms" in X and X["t_roofline_ms"].notna().all() and all(c in X for c in need):
            return X
        if "hardware" not in X:
            raise HermesError("surrogate input rows need a 'hardware' column or roofline columns")
        cat = _catalog(tuple(self.catalog_files))
        parts = []
        for name, part in X.groupby(X["hardware"].astype(str), sort=False):
            parts.append(attach_roofline(self.kind, part, cat.get(name)))
        return pd.concat(parts).loc[X.index]

    def _pcie_gb_s(self, X: pd.DataFrame) -> np.ndarray:
        """Per-row PCIe bandwidth of the row's device (64 GB/s when unknown)."""
        if "hardware" not in X:
            return np.full(len(X), 64.0)
        cat = _catalog(tuple(self.catalog_files))
        bw = {h: (cat.get(h).pcie_bw_gb_s if h in cat else 0.0) or 64.0 for h in X["hardware"].astype(str).unique()}
        return X["hardware"].astype(str).map(bw).to_numpy(dtype=float)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        X = self._with_roofline(X)
        n = len(X)
        col = lambda c, d=np.nan: (X[c].to_numpy(dtype=float) if c in X else np.full(n, d))  # noqa: E731
        lg = lambda v: np.log(np.maximum(v, _TINY))  # noqa: E731
        peak, bw = col("hw_peak_tflops"), col("hw_mem_bw_gb_s")
        ai = col("arith_intensity")
        ridge = peak * 1e12 / np.maximum(bw * 1e9, 1.0)
        dt = X["dtype"].fillna("bf16") if "dtype" in X else pd.Series(["bf16"] * n)
        kv = X["kv_dtype"] if "kv_dtype" in X else pd.Series([None] * n)
        dtb = np.array([dtype_bytes(d) for d in dt], dtype=float)
        kvb = np.array([dtype_bytes(k) if isinstance(k, str) else b for k, b in zip(kv, dtb)], dtype=float)
        cols = [lg(col("t_roofline_ms")), lg(col("t_compute_ms")), lg(col("t_memory_ms")), lg(ai),
                lg(ai) - lg(ridge), col("l2_resident", 0.0), dtb, kvb,
                stack_code(X["stack"] if "stack" in X else None, n),
                kernel_code(X["kernel"] if "kernel" in X else None, n)]
        if self.hardware_features:  # absolute spec numbers: identify a seen GPU, hurt transfer
            cols += [lg(peak), lg(bw), lg(col("hw_link_bw_gb_s", 0.0)), col("hw_link_latency_us", 0.0)]
        for c in self._shape_columns():
            v = col(c)
            cols.append(np.where(np.isnan(v), 0.0, np.log1p(np.maximum(v, 0.0))))
        if self.kind == "collective":
            cc = X["collective"].map(COLLECTIVE_CODE) if "collective" in X else pd.Series(0, index=X.index)
            cols.append(cc.fillna(-1).to_numpy(dtype=float))
            world = np.nan_to_num(col("world", 2.0), nan=2.0)
            alpha_ms = col("hw_link_latency_us", 0.0) * 1e-3 * 2 * np.maximum(world - 1, 1)
            cols.append(lg(alpha_ms) - lg(col("t_roofline_ms")))
            cols.append(lg(col("hw_link_bw_gb_s", 0.0)) - lg(self._pcie_gb_s(X)))
        codes = {v: i for i, v in enumerate(getattr(self, "variants_", []))}
        cols.append(variant_keys(self.kind, X).map(codes).fillna(-1).to_numpy(dtype=float))
        if self.kind == "gemm":
            cols += _tile_features(X, n)
        if self._token_features():
            cols += elementwise_features(X)
        if self._decode_features():
            cols += decode_features(col)
        if self._wave_features():
            cols += wave_features(self.kind, X, col("hw_compute_units"), n)
        if getattr(self, "with_prior_", False):
            cols += self._transfer_columns(X, col, lg)
        return np.column_stack(cols)

    def _transfer_columns(self, X: pd.DataFrame, col, lg) -> list[np.ndarray]:
        """``log_t_base`` (plus, for collectives, alpha over bus time and the PCIe class)."""
        t_roof = col("t_roofline_ms")
        if getattr(self, "issue_prior_", False):
            # Issue time added to the roofline, not maxed with it: on a held-out GPU's
            # elementwise ops the sum was the closer prior.
            return [lg(t_roof + np.nan_to_num(col("t_issue_ms", 0.0), nan=0.0))]
        if self.kind != "collective":
            return [lg(t_roof)]
        world = np.nan_to_num(col("world", 2.0), nan=2.0)
        link = col("hw_link_bw_gb_s", 0.0)
        pcie = (link <= self._pcie_gb_s(X)).astype(float)  # no NVLink-class link: ring over PCIe
        t_bus = t_roof * np.where(pcie > 0, np.maximum(world / 2, 1.0), 1.0)
        alpha = col("hw_link_latency_us", 0.0) * 1e-3
        return [lg(alpha + t_bus), lg(alpha) - lg(t_bus), pcie]
