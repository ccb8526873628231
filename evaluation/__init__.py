"""Evaluation stage: C-way one-shot tasks (Algorithm 4) and accuracy (Algorithm 3) over cached embeddings.

Modules: ``embedder`` (the protocol), ``tasks`` (drawing tasks), ``evaluator``
(scoring, :func:`~evaluation.evaluator.evaluate_one_shot`), ``metrics`` (intervals,
confusion), ``baseline`` (no-learning scorer), ``suite`` (one set of classes: network,
baseline, C-curve), ``checks`` (refusals), ``reevaluate`` (checkpoint x splits),
``report`` / ``plots`` (files). The ``evaluate`` subcommand lives in the shell
(:mod:`siamese_audio.cli.evaluate`), which hands this stage an embedder.
"""

from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import OneShotResult, evaluate_one_shot

#: The public scoring API (what training's validation calls).
__all__ = ["Embedder", "OneShotResult", "evaluate_one_shot"]
