"""A new GPU from a few measured rows: a per-GPU correction on top of the spec-sheet transfer.

Refitting the regressors with a few hundred rows of the new GPU among a million of the others
would drown them (and take minutes); instead the trained surrogate keeps pricing the GPU from
its spec sheet, and the few rows fit the log ratio ``r(x) = log(measured / predicted)`` per op
kind with a Gaussian process (``profiling.plan``'s prior: a level, an offset per kernel
variant, a blend of the measured GPUs' efficiency curves (``with_basis``), a smooth curve
over log shape, noise). Its posterior mean moves the prediction (level and efficiency-curve
shape); its posterior sd, never below the leave-one-out error on the rows, is the new
interval, which ``narrowing`` compares with the surrogate's own. The prior's scale and length are chosen
per kind by leave-one-out MAPE on the measured rows (closed-form for a GP) over a small grid,
next to a level-only correction and none: the few rows choose how much of a curve they can carry.
A query of a kernel variant with no measured rows (the simulator's, naming no kernel) gets the
correction only if it predicted each measured variant's rows with that variant left out better
than no correction did: a level learnt on other kernels is not assumed to carry to this one.

``FewRowSurrogate`` is a ``SurrogateModel`` whose predictions on the corrected GPUs go through
their correction; saved and loaded like any surrogate (``--surrogate DIR``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from profiling.errors import HermesError
from profiling.hardware import HardwareSpec
from profiling.plan import BASIS_PREFIX, PLAN_KINDS, GPPrior, basis_of, covariance, embed, variant_of

from .model import Prediction, SurrogateModel

Z90 = 1.645
# Rows a kind needs before a curve over shape is tried (fewer only move the level).
MIN_ROWS_TO_TUNE = 8
SCALES = (0.25, 1.0, 4.0)
LENGTHS = (0.75, 1.5, 3.0)
# Noise variances: what the smooth curve leaves (tile and wave steps) acts as noise.
NOISES = (0.01, 0.05)


@dataclass
class KindCorrection:
    """The posterior of ``r`` for one op kind on one GPU."""

    kind: str
    prior: GPPrior
    z: np.ndarray
    v: np.ndarray
    x: np.ndarray  # basis columns of the measured rows, centred by ``x_center``
    x_center: np.ndarray  # median basis of the measured rows: the level term owns the offset
    r_range: tuple[float, float]  # the measured log ratios' range: the mean never leaves it
    alpha: np.ndarray  # K^-1 r
    chol: np.ndarray  # lower Cholesky factor of K (with noise)
    n: int
    active: bool = True  # False: no correction beat the transfer on the rows (left as it was)
    q_loo: float = 0.0  # 90% quantile of the leave-one-out |log error|: the interval's floor
    # Whether the correction reaches kernel variants without measured rows (a query naming no
    # kernel among them): only if it predicted each measured variant left out (``_lovo_ape``).
    to_unmeasured: bool = True

    def posterior(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of ``r`` at the rows of ``frame``."""
        p = self.prior
        out_mu, out_sd = np.zeros(len(frame)), np.full(len(frame), np.nan)
        if not self.active:
            return out_mu, out_sd
        z, v, x = embed(self.kind, frame), variant_of(frame), basis_of(frame)
        if x.shape[1] != self.x.shape[1]:
            raise HermesError(f"'{self.kind}' correction: {x.shape[1]} basis columns given, "
                              f"fitted with {self.x.shape[1]}")
        x = x - self.x_center
        prior_var = p.level + p.variant + p.shape + p.basis * (x ** 2).sum(1)
        for s in range(0, len(frame), 20000):  # bounded memory on 100k-row queries
            e = slice(s, s + 20000)
            ks = covariance(z[e], v[e], self.z, self.v, p, x[e], self.x)
            out_mu[e] = ks @ self.alpha
            w = np.linalg.solve(self.chol, ks.T)
            out_sd[e] = np.sqrt(np.maximum(prior_var[e] - (w ** 2).sum(0), 0.0))
        # A GP's mean far from its rows swings past anything measured; clipped to the range
        # measured, a shape unlike every measured one keeps at most the largest correction seen.
        out_mu = np.clip(out_mu, *self.r_range)
        if not getattr(self, "to_unmeasured", True):  # corrections pickled before the gate: True
            out_mu[~np.isin(v, self.v)] = 0.0
        return out_mu, out_sd


def _posterior_parts(z, v, x, r, prior: GPPrior) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Cholesky factor, K^-1 r, leave-one-out log errors) of the process on the measured
    rows. The leave-one-out means are closed-form: r_i - (K^-1 r)_i / (K^-1)_ii."""
    k = covariance(z, v, z, v, prior, x, x) + prior.noise * np.eye(len(z))
    chol = np.linalg.cholesky(k)
    inv_l = np.linalg.solve(chol, np.eye(len(z)))
    alpha = inv_l.T @ (inv_l @ r)
    loo = r - alpha / (inv_l ** 2).sum(0)
    return chol, alpha, np.clip(loo, r.min(), r.max()) - r


def _lovo_ape(z, v, x, r, prior: GPPrior) -> float:
    """MAPE of the process on each measured kernel variant's rows when that variant is left
    out (fitted on the others' rows): how well the correction carries to a variant it has no
    rows of. NaN with fewer than two variants (nothing to leave out)."""
    groups = np.unique(v)
    if len(groups) < 2:
        return float("nan")
    err = np.empty(len(r))
    for g in groups:
        out = v == g
        _, alpha, _ = _posterior_parts(z[~out], v[~out], x[~out], r[~out], prior)
        ks = covariance(z[out], v[out], z[~out], v[~out], prior, x[out], x[~out])
        err[out] = np.clip(ks @ alpha, r[~out].min(), r[~out].max()) - r[out]
    return _ape(err)


def _ape(log_err: np.ndarray) -> float:
    return float(np.mean(np.abs(np.exp(log_err) - 1)) * 100)


def _priors_tried(prior: GPPrior, n: int) -> list[GPPrior]:
    """Level and variant offsets only, and with ``n >= MIN_ROWS_TO_TUNE`` the whole prior
    at each scale, length and noise of the grid."""
    out = [GPPrior(prior.level * s, prior.variant * s, 0.0, prior.lengthscale, nz, 0.0)
           for s in SCALES for nz in NOISES]
    if n >= MIN_ROWS_TO_TUNE:
        out += [GPPrior(prior.level * s, prior.variant * s, prior.shape * s, ell, nz, prior.basis * s)
                for s in SCALES for ell in LENGTHS for nz in NOISES]
    return out


def fit_kind(kind: str, rows: pd.DataFrame, base_ms: np.ndarray, prior: GPPrior) -> KindCorrection:
    """The correction of ``kind`` from measured ``rows`` (with ``latency_ms``) and the
    surrogate's predictions of them ``base_ms``: of the priors tried (``_priors_tried``) the
    one whose leave-one-out MAPE on the rows is lowest; none at all (the transfer kept, with
    its interval) where no correction beats the transfer there."""
    y = rows["latency_ms"].to_numpy(dtype=float)
    ok = np.isfinite(y) & (y > 0) & np.isfinite(base_ms) & (base_ms > 0)
    rows, r = rows[ok], np.log(y[ok] / base_ms[ok])
    z, v, x = embed(kind, rows), variant_of(rows), basis_of(rows)
    center = np.median(x, axis=0) if len(x) else np.zeros(x.shape[1])
    x = x - center
    r_range = (float(r.min()), float(r.max())) if len(r) else (0.0, 0.0)
    best = (_ape(-r) if len(r) >= 2 else np.inf, None, None, None, None)
    for p in _priors_tried(prior, len(r)):
        chol, alpha, loo = _posterior_parts(z, v, x, r, p)
        if _ape(loo) < best[0]:
            best = (_ape(loo), p, chol, alpha, loo)
    _, p, chol, alpha, loo = best
    if p is None:  # the transfer as it is, with its own interval
        return KindCorrection(kind, prior, z, v, x, center, r_range, np.zeros(len(r)), np.eye(len(r)), len(r),
                              active=False)
    # A query naming no kernel is a variant without rows here: corrected only where leaving
    # each measured variant out showed the correction beats none on it (never hurt by a level
    # learnt on other kernels; one variant: the user's own kernel, nothing to test).
    lovo = _lovo_ape(z, v, x, r, p)
    return KindCorrection(kind, p, z, v, x, center, r_range, alpha, chol, len(r),
                          q_loo=float(np.quantile(np.abs(loo), 0.9)),
                          to_unmeasured=bool(np.isnan(lovo) or lovo < _ape(-r)))


@dataclass
class FewRowCorrection:
    """Corrections of one GPU, per op kind (kinds without measured rows keep the transfer)."""

    hardware: str
    kinds: dict[str, KindCorrection] = field(default_factory=dict)

    def apply(self, kind: str, frame: pd.DataFrame, base_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(corrected ms, interval half-width in log units at 90%) of ``frame``'s rows."""
        c = self.kinds.get(kind)
        if c is None or not c.active:
            return base_ms, np.full(len(frame), np.nan)
        mu, sd = c.posterior(frame)
        # The process's own width, never below what leaving each measured row out showed.
        return base_ms * np.exp(mu), np.maximum(Z90 * np.sqrt(sd ** 2 + c.prior.noise), c.q_loo)


def with_basis(model: SurrogateModel, kind: str, frame: pd.DataFrame, hw: HardwareSpec
               ) -> tuple[np.ndarray, pd.DataFrame]:
    """``model``'s prediction of ``frame`` on ``hw`` (ms) and ``frame`` with one basis column
    per measured GPU: the log ratio of that GPU's prediction to it (the shape of each
    measured GPU's efficiency curve, which the new GPU's correction blends)."""
    frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith(BASIS_PREFIX)])
    shapes = frame.drop(columns=[c for c in ("latency_ms",) if c in frame]).reset_index(drop=True)
    base = SurrogateModel.predict(model, kind, shapes, hw).ms
    km = model.kinds_.get(kind)
    cols = {}
    for name in sorted(km.hardware if km is not None else ()):
        spec = model.specs_.get(name)
        if spec is not None and name != hw.name:
            cols[f"{BASIS_PREFIX}{name}"] = np.log(SurrogateModel.predict(model, kind, shapes, spec).ms / base)
    return base, frame.reset_index(drop=True).assign(**cols)


def kind_priors(model: SurrogateModel) -> dict[str, GPPrior]:
    """Each kind's prior for ``r``: its total sd set from the surrogate's bf16 transfer
    quantile (the interval a GPU never measured gets)."""
    out = {}
    for kind in PLAN_KINDS:
        km = model.kinds_.get(kind)
        q = float("nan") if km is None else getattr(km, "q_transfer_by", {}).get("bf16", km.q_transfer)
        out[kind] = GPPrior().scaled(q)
    return out


def fit_correction(model: SurrogateModel, rows: pd.DataFrame, hw: HardwareSpec,
                   priors: dict[str, GPPrior] | None = None) -> FewRowCorrection:
    """The correction of ``hw`` from its measured ``rows`` (canonical table, any op kinds:
    those the plan profiles are used) on top of ``model``'s transfer predictions."""
    priors = priors or kind_priors(model)
    out = FewRowCorrection(hw.name)
    for kind, part in rows.groupby("op"):
        if kind not in PLAN_KINDS or kind not in model.kinds_:
            continue
        part = part[part["latency_ms"].notna() & (part["latency_ms"] > 0)]
        if not len(part):
            continue
        base, part = with_basis(model, kind, part, hw)
        out.kinds[kind] = fit_kind(kind, part, base, priors[kind])
    if not out.kinds:
        raise HermesError(f"no measured rows of {', '.join(PLAN_KINDS)} to correct {hw.name} with")
    return out


@dataclass
class FewRowSurrogate(SurrogateModel):
    """A surrogate whose predictions on GPUs with a ``FewRowCorrection`` are corrected."""

    corrections_: dict[str, FewRowCorrection] = field(default_factory=dict)

    @classmethod
    def wrap(cls, base: SurrogateModel, corrections: dict[str, FewRowCorrection]) -> "FewRowSurrogate":
        obj = cls.__new__(cls)
        obj.__dict__.update(base.__dict__)
        obj.corrections_ = dict(corrections)
        return obj

    def predict(self, kind: str, shapes: pd.DataFrame, hw: HardwareSpec) -> Prediction:
        base = super().predict(kind, shapes, hw)
        corr = getattr(self, "corrections_", {}).get(hw.name)
        if corr is None or kind not in corr.kinds:
            return base
        _, frame = with_basis(self, kind, shapes, hw)
        ms, q = corr.apply(kind, frame, base.ms)
        if np.isnan(q).all():  # the rows did not beat the transfer: kept as it was
            return base
        note = f"{hw.name}: corrected by {corr.kinds[kind].n} measured '{kind}' rows"
        return Prediction(ms, ms * np.exp(-q), ms * np.exp(q), base.provenance, note)


def narrowing(model: SurrogateModel, corr: FewRowCorrection, hw: HardwareSpec,
              pools: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Per kind: the median 90% interval half-width (as a factor, x1.20 = +-20%) on the
    ``pools`` shapes before (the surrogate's own interval on ``hw``) and after the correction."""
    out = {}
    for kind, pool in pools.items():
        if kind not in corr.kinds or not len(pool):
            continue
        p = model.predict(kind, pool, hw)
        before = np.median(np.log(p.hi_ms / p.ms))
        _, frame = with_basis(model, kind, pool, hw)
        _, q = corr.apply(kind, frame, p.ms)
        after = float(np.median(q)) if np.isfinite(q).any() else before  # declined: unchanged
        out[kind] = {"rows": corr.kinds[kind].n, "corrected": bool(corr.kinds[kind].active),
                     "before_x": float(np.exp(before)), "after_x": float(np.exp(after)),
                     "narrowed_pct": float((1 - after / before) * 100) if before > 0 else float("nan")}
    return out
