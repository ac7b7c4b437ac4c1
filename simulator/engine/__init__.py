"""The serving engine: one model on a group of devices, step by step.

Map (read in this order):
    core.py        the discrete-event heap (time, priority, seq) and ``Environment``
    config.py      what a scenario says about one deployment: scheduler, router, overheads, engine, workload
    engines.py     an ``engine:`` block (vLLM, SGLang, TensorRT-LLM + their own arguments) resolved with
                   the release's documented defaults (engine_defaults.yaml) and a fitted profile
    workload.py    request streams (arrival, prompt and output tokens) from distributions or traces
    store.py       per-request state as flat lists, fast to touch from the step loop
    memory.py      a replica's device memory: weights, activations, reserve, paged KV blocks
    stepcost.py    one step's time: compiled surrogate tables + the engine's overheads
    schedulers.py  batching policies, one class each (static, continuous, chunked, mixed, disaggregated)
    replica.py     one engine instance: queues, KV blocks, the step loop, preemption
    router.py      spreading arrivals over replicas, one class per rule
    deployment.py  replicas behind a router; a deployment is what a pipeline's ``llm`` stage calls
    speculative.py speculative decoding: a proposer's guesses verified in one wider step
    lora.py        LoRA adapters: GPU slots, CPU/disk tiers, the adapters' GEMMs
    autoscale.py   an autoscaled deployment: replicas that follow a signal, billed per replica-second
    metrics.py     per-request table and summary: latencies, throughput, goodput, cost, energy

The engine knows nothing of pipelines or measurements: ``simulator.pipelines`` builds on it,
``simulator.fidelity`` replays measurements through both (checked by import-linter).
"""

from . import autoscale  # noqa: F401,E402  (registers the autoscaled deployment kind with deployment.py)
