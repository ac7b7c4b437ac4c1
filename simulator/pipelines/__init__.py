"""Multi-stage pipelines: the path a request walks before, around and after the LLM.

Map:
    schema.py          the scenario sections of pipelines (request classes, services, KV tiers, network)
    stage.py           the stage base (``Stage``, ``BuildContext``, ``draw``, ``spawn``) every stage type builds on
    stages.py          the stage types (preprocess, rag_*, kv_retrieve, llm, route, postprocess), registry ``STAGES``
    reasoning.py       the ``reasoning`` stage: generate/score loops and parallel branches (imports stage.py only)
    pipeline.py        request classes mixed by weight at run time, each request walking its stages
    build.py           turns a scenario's pipeline sections into services, tiers, network and classes;
                       a scenario without pipelines is ``PLAIN_CLASS``, one ``llm`` stage over its deployments
    service.py         CPU/GPU workers running a non-LLM stage
    retrieval_cost.py  cost models of vector search and encoders
    kv_tiers.py        the KV memory hierarchy with LRU prefix caches per tier
    sessions.py        shared-prefix structure: system prompts, multi-turn sessions
    network.py         links shared max-min fairly over a device/node/rack/cluster topology
    plots.py           per-stage latency breakdown plot

Pipelines build on ``simulator.engine`` (an ``llm`` stage calls a deployment); never the reverse.
"""
