"""Evaluation stage: C-way one-shot tasks (Algorithm 4) and accuracy (Algorithm 3) over cached embeddings.

Modules: ``embedder`` (the protocol), ``tasks`` (drawing tasks), ``evaluator``
(scoring, :func:`~evaluation.evaluator.evaluate_one_shot`), ``metrics`` (intervals,
confusion), ``baseline`` (no-learning scorer), ``suite`` (one set of classes: network,
baseline, C-curve), ``checks`` (refusals), ``reevaluate`` (checkpoint x splits),
``report`` / ``plots`` (files), ``cli`` (``siamese-audio evaluate``).
"""
