"""Evaluation stage: C-way one-shot tasks (Algorithm 4) and accuracy (Algorithm 3) over cached embeddings.

Modules: ``embedder`` (the protocol), ``tasks`` (drawing tasks: :func:`evaluation_tasks` is
what ``evaluate`` draws), ``evaluator``
(scoring, :func:`~evaluation.evaluator.evaluate_one_shot`), ``metrics`` (intervals,
confusion), ``baseline`` (no-learning scorer), ``suite`` (one set of classes: network,
baseline, C-curve), ``checks`` (refusals), ``reevaluate`` (checkpoint x splits),
``report`` / ``plots`` (files). The ``evaluate`` subcommand lives in the shell
(:mod:`siamese_audio.cli.evaluate`), which hands this stage an embedder.
"""

from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import OneShotResult, evaluate_one_shot
from siamese_audio.evaluation.tasks import POSITIVES_ANY_CLIP, POSITIVES_OTHER_RECORDING, evaluation_tasks

#: The public scoring API (what training's validation calls), and the tasks evaluate draws.
__all__ = ["POSITIVES_ANY_CLIP", "POSITIVES_OTHER_RECORDING", "Embedder", "OneShotResult", "evaluate_one_shot",
           "evaluation_tasks"]
