"""Explanations of one-shot decisions: which parts of a support keep its similarity to the query.

SINEX and SINEXC (the authors' methods, their bugs fixed) segment each support
of an evaluate task, fill segments, and score the perturbed copies against the
query, batched; faithfulness (deletion / insertion curves, AOPC against random
orders, decision flips), a model-parameter randomisation sanity check, and
sonification of the most relevant segments say how far to trust them.

Modules: ``segments`` (felzenszwalb / slic), ``perturb`` (fill level, lazy
masks), ``engine`` (batched and naive scoring), ``methods`` (SINEX, SINEXC),
``faithfulness``, ``sanity``, ``sonify``, ``figures``, ``report`` (files),
``task`` (one task) and ``run`` (:func:`explain_checkpoint`, what the
``explain`` subcommand calls). Like the rest of evaluation, nothing here
imports training: the shell hands over an embedder.
"""

from siamese_audio.evaluation.explain.methods import MethodConfig, SupportExplanation, explain_supports
from siamese_audio.evaluation.explain.run import ExplainResult, ExplainSettings, explain_checkpoint

__all__ = ["ExplainResult", "ExplainSettings", "MethodConfig", "SupportExplanation", "explain_checkpoint",
           "explain_supports"]
