"""hermes_sim: the command-line façade (console script ``hermes-sim``). Holds no logic of
its own; every verb calls into profiling/, surrogates/, simulator/ or search/."""
