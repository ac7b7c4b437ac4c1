"""Fidelity: replaying real measurements through the simulator and fitting the engine to them.

Map:
    runs.py       a real serving run (profiling.readers.runs) replayed with its engine block and scored
    engine_fit.py fits an engine's parameters (Optuna) on runs and silicon rows together,
                  leave-one-run-out / -GPU-out; writes the engine profile a scenario names
    silicon.py    end-to-end serving measurements (``silicon_sample.csv`` rows) as scenarios to
                  replay, through the row's engine block
    calibrate.py  fits the engine's overheads and unrecorded settings per serving stack
    validate.py   replays measured requests through a scenario and scores them per request

Readers of the measured files live in ``profiling.readers``. Fidelity uses the engine and the
pipelines; nothing else in the simulator imports it.
"""
