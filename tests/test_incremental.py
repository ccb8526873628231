"""Incremental embedding: copies that differ from a base in a region give the full pass's embedding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from siamese_audio.evaluation.explain.engine import Job, score_queue  # noqa: E402
from siamese_audio.evaluation.explain.methods import (  # noqa: E402
    MethodConfig,
    explain_supports,
    explain_supports_naive,
    keep_matrix,
)
from siamese_audio.evaluation.explain.perturb import SegmentMasks  # noqa: E402
from siamese_audio.training.config import CPU_MODEL, preset  # noqa: E402
from siamese_audio.training.embedder import TorchEmbedder  # noqa: E402
from siamese_audio.training.incremental import conv_cost, embed_local, local_context, local_plan  # noqa: E402
from siamese_audio.training.model import build_model  # noqa: E402
from tests.explain_helpers import make_task  # noqa: E402

SHAPE = (40, 86)  # odd sizes after the input's time pooling (86 // 4 = 21) and after every pooling


def cpu_like(**changes):
    """The cpu-esc50 network's shape (time pooling, batch norm, avgmax pooling), narrow."""
    config = dataclasses.replace(CPU_MODEL, **{"conv_filters": (4, 6, 8), "conv_kernels": (3, 3, 3), "fc_units": 12,
                                               **changes})
    model = build_model(config, SHAPE, seed=0)
    model.set_input_stats(np.linspace(-50, -30, SHAPE[0]), np.linspace(10, 20, SHAPE[0]))
    with torch.no_grad():  # non-trivial batch-norm statistics, so that a wrong pixel shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


def copies(base: np.ndarray, other: np.ndarray, seed: int = 0) -> np.ndarray:
    """Copies of ``base`` with rectangles of ``other``: random ones, the corners, the dropped frames, all, none."""
    rng = np.random.default_rng(seed)
    h, w = base.shape
    boxes = [(0, 1, 0, 1), (h - 1, h, w - 1, w), (0, h, 0, w), (0, h, w - 2, w), (h - 3, h, 0, w), (5, 6, 40, 41)]
    for _ in range(20):
        dh, dw = rng.integers(1, h // 2), rng.integers(1, w // 2)
        r, c = rng.integers(0, h - dh + 1), rng.integers(0, w - dw + 1)
        boxes.append((r, r + dh, c, c + dw))
    out = np.repeat(base[None], len(boxes) + 1, axis=0)  # the last copy is the base itself
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        out[i, r0:r1, c0:c1] = other[r0:r1, c0:c1]
    return out


def pair(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (np.full(SHAPE, -70.0, np.float32) + rng.normal(0, 1, SHAPE).astype(np.float32),
            (rng.normal(-35, 12, SHAPE)).astype(np.float32))


@pytest.mark.parametrize("changes", [
    {},
    {"pooling": "avg", "global_pool": "avg"},
    {"global_pool": "max", "time_pool": 1, "embed_center": True},
    {"global_pool": "none", "batch_norm": False, "time_pool": 2, "conv_kernels": (5, 3, 3)},
])
def test_embed_local_equals_the_full_pass(changes):
    torch.set_num_threads(1)
    model = cpu_like(**changes)
    base, other = pair()
    x = copies(base, other)
    with torch.no_grad():
        full = model.embed(torch.from_numpy(x)).numpy()
        ctx = local_context(model, base, torch.device("cpu"))
        assert ctx is not None
        # max_fraction 2: every group takes the windowed path, even one that changes the whole clip
        local = embed_local(model, ctx, x, torch.device("cpu"), batch_size=4, max_fraction=2.0)
    np.testing.assert_allclose(local, full, rtol=0, atol=1e-5 * np.abs(full).max())
    np.testing.assert_array_equal(local[-1], ctx.embedding)  # unchanged copy: the base's own embedding


def test_small_changes_cost_a_fraction_and_large_ones_run_the_full_pass():
    model = cpu_like()
    base, other = pair()
    plan = local_plan(model)
    assert plan is not None and conv_cost(plan) > 0
    calls = []
    original = model.embed

    def counting(x):
        calls.append(len(x))
        return original(x)

    model.embed = counting
    x = copies(base, other)
    with torch.no_grad():
        ctx = local_context(model, base, torch.device("cpu"))
        embed_local(model, ctx, x[[0, 1, 5]], torch.device("cpu"))  # single pixels: windowed
        assert calls == []
        embed_local(model, ctx, x[[2]], torch.device("cpu"))  # the whole clip: a full pass
        assert calls == [1]


@pytest.mark.parametrize("unsupported", [
    {"tta_crops": 3, "tta_frames": 40},
    {"conv_kernels": (3, 2, 3)},
    {"conv_kernels": (1, 3, 3)},
])
def test_networks_it_cannot_window_are_refused(unsupported):
    assert local_plan(cpu_like(**unsupported)) is None


def test_a_strided_convolution_is_refused():
    model = cpu_like()
    model.encoder.layers[0].stride = (2, 2)
    assert local_plan(model) is None


def _embedder(model, **kw):
    return TorchEmbedder(model, torch.device("cpu"), batch_size=4, precision="fp32", **kw)


@pytest.mark.parametrize("channels_last", [False, True])
def test_sinex_maps_with_incremental_embedding_equal_the_loop(channels_last):
    """The explain path end to end: incremental (default) == full batches == the authors' loop, to 1e-6."""
    torch.set_num_threads(1)
    from tests.explain_helpers import SHAPE as TASK_SHAPE

    config = dataclasses.replace(CPU_MODEL, conv_filters=(4, 6), conv_kernels=(3, 3), fc_units=12)
    model = build_model(config, TASK_SHAPE, seed=0)
    model.set_input_stats(np.full(TASK_SHAPE[0], -40.0), np.full(TASK_SHAPE[0], 15.0))
    embedder = _embedder(model, channels_last=channels_last)
    query, supports, labels, fills = make_task(seed=5)
    q = embedder.embed(query[None])[0]
    v = embedder.similarity(np.repeat(q[None], len(supports), axis=0), embedder.embed(supports))
    local = explain_supports(embedder, q, supports, v, labels, fills, MethodConfig("sinex"))
    full = explain_supports(embedder, q, supports, v, labels, fills, MethodConfig("sinex"), local=False)
    loop = explain_supports_naive(embedder, query, supports, labels, fills, MethodConfig("sinex"))
    for a, b, c in zip(local, full, loop):
        np.testing.assert_allclose(a.h_map(), c.h_map(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(b.h_map(), c.h_map(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(a.u, c.u, rtol=1e-5, atol=1e-6)


def test_the_queue_uses_the_support_as_base_for_chunks_that_keep_most_of_it():
    """Deletion-like masks (keep all but one segment) go through the support's own context."""
    from siamese_audio.training.config import preset as training_preset

    model_config, _ = training_preset("tiny")
    model = build_model(model_config, (24, 32), seed=0)
    model.set_input_stats(-40.0, 15.0)
    embedder = _embedder(model)
    bases = []
    original = embedder.local_context

    def recording(base):
        bases.append(base.copy())
        return original(base)

    embedder.local_context = recording
    query, supports, labels, fills = make_task(seed=2)
    k = int(labels[0].max()) + 1
    keep = ~keep_matrix(k, MethodConfig("sinex"))[:-1]  # each row removes one segment
    masks = SegmentMasks(labels[0], keep)
    q = embedder.embed(query[None])[0]
    (local,) = score_queue(embedder, q, supports, fills, [Job(0, masks)])
    (full,) = score_queue(embedder, q, supports, fills, [Job(0, masks)], local=False)
    np.testing.assert_allclose(local, full, atol=1e-6, rtol=0)
    assert len(bases) == 1 and np.array_equal(bases[0], supports[0])


def test_an_embedder_without_support_falls_back_to_full_batches():
    model_config, _ = preset("tiny")
    model = build_model(model_config, (24, 32), seed=0)
    model.set_input_stats(-40.0, 15.0)
    embedder = _embedder(model)
    embedder.local_context = lambda base: None
    query, supports, labels, fills = make_task(seed=3)
    q = embedder.embed(query[None])[0]
    v = embedder.similarity(np.repeat(q[None], len(supports), axis=0), embedder.embed(supports))
    a = explain_supports(embedder, q, supports, v, labels, fills, MethodConfig("sinex"))
    b = explain_supports(embedder, q, supports, v, labels, fills, MethodConfig("sinex"), local=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.u, y.u)
