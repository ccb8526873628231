"""Hyper-parameter search (the report's Table 2.2) with Optuna, trials spread over a Dask cluster.

Modules: ``space`` (the default space, TOML spaces, their checks), ``trial`` (one trial as a
Dask task: train, report each validation, stop when pruned), ``study`` (:func:`tune`: the
sampler, the journal file, the scheduling loop, resume), ``outputs`` (trials.parquet,
best.toml, plots, study.md).
"""

from siamese_audio.training.tune.space import Param, Space, check_space, default_space, load_space
from siamese_audio.training.tune.study import DEFAULT_PRUNER, TuneConfig, TuneResult, read_settings, tune
from siamese_audio.training.tune.trial import PRUNERS, open_run_data

__all__ = ["DEFAULT_PRUNER", "PRUNERS", "Param", "Space", "TuneConfig", "TuneResult", "check_space", "default_space",
           "load_space", "open_run_data", "read_settings", "tune"]
