"""profiling: what the hardware did.

Public API: hardware and model catalogs, the operator taxonomy and step expansion, the
canonical trace table (readers, validation), roofline features and the local profiler.
"""
from .errors import HermesError, InputError
from .hardware import HardwareCatalog, HardwareSpec, load_catalog
from .models import ModelCatalog, ModelSpec, load_models, resolve_model
from .operators import OP_KINDS, BatchShape, Operator, expand_step, op_cost

__all__ = ["HermesError", "InputError", "HardwareCatalog", "HardwareSpec", "load_catalog",
           "ModelCatalog", "ModelSpec", "load_models", "resolve_model", "OP_KINDS",
           "BatchShape", "Operator", "expand_step", "op_cost"]
