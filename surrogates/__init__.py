"""surrogates: per-operator latency regressors learned from traces, and compiled step tables.

Public API:

* ``load_surrogate(ref=None) -> SurrogateModel`` — ``None``/"builtin" = the shipped bundle
  (``surrogates/bundle``), a directory written by ``hermes-sim surrogate train``, or an
  MLflow run id / ``runs:/<id>``. A GPU with no training data is predicted by the transfer
  model from its spec sheet (provenance ``extrapolated``; ``describe_hardware`` says so).
* ``SurrogateModel`` — an ``OpLatencyModel``: ``predict_ms(kind, shapes_df, hw) -> ms`` and
  ``predict(...) -> Prediction(ms, lo_ms, hi_ms, provenance)``; ``fit(table)``, ``save``, ``load``.
* ``make_surrogate(kind, estimator)`` — the sklearn ``Pipeline`` (``RooflineFeatures`` then
  ``RatioRegressor``) for one operator kind; estimators xgboost | rf | linear | roofline.
* ``train_surrogate``, ``holdout_study``, ``accuracy_table``, ``load_traces``, ``table_hash``.
* ``OpLatencyModel``, ``RooflinePredictor``, ``StepTable``, ``compile_step_table``.
"""
from .compiled import OpLatencyModel, RooflinePredictor, StepTable, compile_step_table
from .estimators import ESTIMATORS, RatioRegressor, make_surrogate
from .evaluate import HOLDOUTS, accuracy_table, holdout_study
from .features import RooflineFeatures
from .model import PROVENANCE, Prediction, SurrogateModel
from .sources import load_traces, table_hash
from .tracking import load_surrogate
from .train import train_surrogate

__all__ = ["OpLatencyModel", "RooflinePredictor", "StepTable", "compile_step_table", "ESTIMATORS",
           "RatioRegressor", "make_surrogate", "HOLDOUTS", "accuracy_table", "holdout_study",
           "RooflineFeatures", "PROVENANCE", "Prediction", "SurrogateModel", "load_traces", "table_hash",
           "load_surrogate", "train_surrogate"]
