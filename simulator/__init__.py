"""simulator: the discrete-event LLM serving simulator.

Public API:
    Scenario, load_scenario(path), parse_scenario(dict, source)   -- the scenario file
    simulate(scenario, *, progress=None, should_stop=None) -> SimResult
    SimResult (.summary dict, .requests DataFrame, .write(outdir), .stopped_early)
    check_fit(scenario) -> {deployment: MemoryPlan}; raises HermesError with the arithmetic
    SCHEDULERS, ROUTERS, DEPLOYMENT_KINDS                          -- plugin registries
    Environment                                                     -- the event core
    Stage, BuildContext                                             -- the stage base a new stage type subclasses
    Pipelines                                                       -- requests walking their class's stages
    build_requests(workload, seed), read_trace(path)               -- workloads
    STAGES                                                          -- pipeline stage types by kind (stages.py)
    Network, Topology, Place                                        -- links shared max-min fairly
    KVHierarchy, PrefixCache, TierSpec, fit_read_latency            -- KV tiers with prefix caches
    ServiceDeployment, VectorSearchModel, IndexSpec, EncoderCost    -- CPU/GPU services, RAG costs
"""
from .engine.core import Environment, StopSimulation
from .engine.deployment import DEPLOYMENT_KINDS, check_fit
from .pipelines.kv_tiers import KVHierarchy, PrefixCache, TierSpec, fit_read_latency
from .engine.memory import MemoryPlan, plan_memory
from .pipelines.network import Network, Place, Topology
from .result import SimResult
from .pipelines.retrieval_cost import EncoderCost, IndexSpec, VectorSearchModel
from .engine.router import ROUTERS
from .scenario import Scenario, load_scenario, parse_scenario
from .engine.schedulers import SCHEDULERS
from .pipelines.service import ServiceDeployment
from .simulate import simulate
from .pipelines.pipeline import Pipelines
from .pipelines.stage import BuildContext, Stage
from .pipelines.stages import STAGES
from .engine.workload import Requests, build_requests, read_trace

__all__ = ["Environment", "StopSimulation", "DEPLOYMENT_KINDS", "check_fit", "MemoryPlan",
           "plan_memory", "SimResult", "ROUTERS", "Scenario", "load_scenario", "parse_scenario",
           "SCHEDULERS", "simulate", "Pipelines", "Stage", "BuildContext", "Requests", "build_requests", "read_trace",
           "STAGES", "Network", "Place", "Topology", "KVHierarchy", "PrefixCache", "TierSpec",
           "fit_read_latency", "ServiceDeployment", "VectorSearchModel", "IndexSpec", "EncoderCost"]
