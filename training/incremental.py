"""Exact embeddings of copies of a clip that differ from it in a small region (incremental inference).

Explanations embed hundreds of perturbed copies of one support. A SINEX
perturbation keeps one segment and fills the rest, so it differs from the
all-filled copy only inside that segment's bounding box; in a convolutional
encoder such a change reaches only a window of each feature map, grown by each
convolution's radius and shrunk by each pooling. :func:`local_context` keeps
the last feature map of a base clip; :func:`embed_local` recomputes, for a
batch of copies, only the windows their differences reach, splices them into
the base's map and finishes with the encoder's own pooling and projection. The
result is the full forward pass's embedding up to float rounding (the same
convolutions over fewer output pixels); the idea is that of Nakandala et al.
(2019), "Incremental and approximate inference for faster occlusion-based deep
CNN explanations".

The windows of one batch share a size (the largest reach in it), so they go
through the convolutions as one tensor, each at its own place in the map.
Pixels of a window that lie outside the feature map are zeroed before every
convolution, which is what ``padding="same"`` does at the map's edge; pooled
windows start on multiples of the pooling stride, so every pooled pixel
inside the map pools the same inputs as in the full pass.

Supported encoders: a stack of 2-D convolutions with odd kernels, stride 1 and
``"same"`` zero padding, max or average pooling whose stride equals its kernel
(no padding, floor mode), and point-wise modules (batch norm in eval mode,
ReLU, dropout); the input's average pooling; then anything (the tail runs on the
full spliced map). Test-time crops are not supported. :func:`local_plan` returns
``None`` for any other network, and callers fall back to full forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siamese_audio.training.model import SiameseNet

#: Point-wise modules (in eval mode): they keep every pixel where it is.
POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Dropout, nn.Dropout2d, nn.Identity)


#: Copies per full forward pass where a group changes too much to window. Small batches keep the first
#: feature maps in cache: the cpu-esc50 encoder (128 x 431, channels-last, 2 cores) ran 2.65 ms a clip at
#: batch 2 against 3.79 ms at batch 8 (windowed groups, whose maps are small, are fastest at 8).
FULL_PASS_BATCH = 2


@dataclass(frozen=True)
class Op:
    """One step of the encoder's convolutional part.

    ``kind``: ``"conv"`` (``weight``, ``bias``, ``groups`` of an ``nn.Conv2d``, with the batch norm that
    follows it folded in; ``radius`` the kernel's half-widths),
    ``"maxpool"`` / ``"avgpool"`` (``stride`` = kernel), or ``"pointwise"``.
    """

    kind: str
    module: nn.Module | None = None
    stride: tuple[int, int] = (1, 1)
    radius: tuple[int, int] = (0, 0)
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    groups: int = 1


@dataclass(frozen=True)
class LocalPlan:
    """The convolutional part of an encoder as :class:`Op` steps, and where its tail starts.

    Attributes
    ----------
    ops : tuple of Op
    tail_start : int
        Index in ``encoder.layers`` of the first module run on the full map.
    sizes : tuple of (int, int)
        Feature-map size at the input of each op, then the size of the last map.
    """

    ops: tuple[Op, ...]
    tail_start: int
    sizes: tuple[tuple[int, int], ...]


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _pool_op(module: nn.Module) -> Op | None:
    kernel = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    if stride != kernel or _pair(module.padding) != (0, 0) or module.ceil_mode:
        return None
    if isinstance(module, nn.MaxPool2d):
        if _pair(module.dilation) != (1, 1) or module.return_indices:
            return None
        return Op("maxpool", stride=kernel)
    if getattr(module, "divisor_override", None) is not None:
        return None
    return Op("avgpool", stride=kernel)


def _conv_op(module: nn.Conv2d) -> Op | None:
    kh, kw = _pair(module.kernel_size)
    if kh % 2 == 0 or kw % 2 == 0 or _pair(module.stride) != (1, 1) or _pair(module.dilation) != (1, 1):
        return None
    if module.padding_mode != "zeros":
        return None
    radius = (kh // 2, kw // 2)
    if min(radius) == 0:
        return None  # a window must grow through every convolution (it then always holds the previous one)
    if module.padding != "same" and _pair(module.padding) != radius:
        return None
    return Op("conv", radius=radius, weight=module.weight, bias=module.bias, groups=module.groups)


def _fold_batch_norms(ops: list[Op]) -> list[Op]:
    """Fold each eval-mode batch norm that directly follows a convolution into its weights and bias."""
    out: list[Op] = []
    for op in ops:
        bn = op.module
        if (isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.track_running_stats and out
                and out[-1].kind == "conv"):
            conv = out[-1]
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.bias is not None:
                shift = shift + bn.bias
            bias = shift if conv.bias is None else conv.bias * scale + shift
            weight = conv.weight * scale.reshape(-1, 1, 1, 1)
            out[-1] = Op("conv", radius=conv.radius, weight=weight.contiguous(memory_format=_layout(conv.weight)),
                         bias=bias, groups=conv.groups)
            continue
        out.append(op)
    return out


def _layout(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() \
        else torch.contiguous_format


def local_plan(model: SiameseNet) -> LocalPlan | None:
    """The :class:`LocalPlan` of ``model``'s encoder, or ``None`` where incremental embedding does not apply."""
    config = model.config
    if config.tta_frames and config.tta_frames < model.encoder.input_shape[1]:
        return None
    encoder = model.encoder
    ops: list[Op] = []
    if tuple(encoder.input_pool) != (1, 1):
        ops.append(Op("avgpool", stride=_pair(tuple(encoder.input_pool))))
    tail_start = len(encoder.layers)
    for index, module in enumerate(encoder.layers):
        if isinstance(module, nn.Conv2d):
            op = _conv_op(module)
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            op = _pool_op(module)
        elif isinstance(module, POINTWISE):
            op = Op("pointwise", module=module)
        else:
            tail_start = index
            break
        if op is None:
            return None
        ops.append(op)
    ops = _fold_batch_norms(ops)
    if not any(op.kind == "conv" for op in ops):
        return None
    windowed = [op.kind for op in ops if op.kind != "pointwise"]
    if any(a != "conv" and b != "conv" for a, b in zip(windowed, windowed[1:])):
        return None  # two poolings in a row: their windows cannot both be aligned
    sizes = [tuple(int(n) for n in encoder.input_shape)]
    for op in ops:
        h, w = sizes[-1]
        sizes.append((h // op.stride[0], w // op.stride[1]))
    return LocalPlan(ops=tuple(ops), tail_start=tail_start, sizes=tuple(sizes))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class LocalContext:
    """What :func:`embed_local` needs of one base clip.

    Attributes
    ----------
    base : np.ndarray [shape=(n_mels, n_frames), dtype=float32]
    inputs : dict of int to torch.Tensor
        For each convolution (by op index), the base's map at its input, zero-padded by
        the kernel's radius, as [shape=(H + 2 p, W + 2 p, C)] (channels last).
    features : torch.Tensor [shape=(H_L, W_L, C)]
        The base's last feature map (before the encoder's tail), channels last.
    embedding : np.ndarray [shape=(D,), dtype=float32]
    plan : LocalPlan
    """

    base: np.ndarray
    inputs: dict[int, torch.Tensor]
    features: torch.Tensor
    embedding: np.ndarray
    plan: LocalPlan


def _apply(op: Op, h: torch.Tensor) -> torch.Tensor:
    if op.kind == "maxpool":
        return F.max_pool2d(h, op.stride)
    if op.kind == "avgpool":
        return F.avg_pool2d(h, op.stride)
    if op.kind == "conv":
        return F.conv2d(h, op.weight, op.bias, stride=1, padding=0, groups=op.groups)
    return op.module(h)  # type: ignore[misc]


def _finish(model: SiameseNet, plan: LocalPlan, features: torch.Tensor) -> torch.Tensor:
    return model.center(model.encoder.tail(features, plan.tail_start))


def local_context(model: SiameseNet, base: np.ndarray, device: torch.device) -> LocalContext | None:
    """Feature maps and embedding of ``base`` [shape=(n_mels, n_frames)] (call in inference mode), or ``None``."""
    plan = local_plan(model)
    if plan is None:
        return None
    base = np.ascontiguousarray(base, dtype=np.float32)
    h = model.normalize(torch.from_numpy(base[None]).to(device)).unsqueeze(1)
    inputs = {}
    for index, op in enumerate(plan.ops):
        if op.kind == "conv":
            p_r, p_c = op.radius
            h = F.pad(h, (p_c, p_c, p_r, p_r))
            inputs[index] = h[0].permute(1, 2, 0).contiguous()
        h = _apply(op, h)
    embedding = _finish(model, plan, h).float().cpu().numpy()[0]
    return LocalContext(base=base, inputs=inputs, features=h[0].permute(1, 2, 0).contiguous(), embedding=embedding,
                        plan=plan)


def _changed(diff: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last changed index along one axis, per copy (0, 0 where nothing changed)."""
    any_ = diff.any(axis=axis)  # (B, n)
    n = any_.shape[1]
    has = any_.any(axis=1)
    first = np.where(has, any_.argmax(axis=1), 0)
    last = np.where(has, n - any_[:, ::-1].argmax(axis=1), 0)
    return first.astype(np.int64), last.astype(np.int64)


def _fit(lo: np.ndarray, hi: np.ndarray, n: int, align: int, shared: bool = True) -> tuple[np.ndarray, int]:
    """One window size for the group and a start per copy, covering each ``[lo, hi)`` inside ``[0, n)``.

    With ``align`` > 1 (a pooling follows), starts and size are multiples of
    ``align`` inside ``[0, align * (n // align))``: the pixels pooled further on.
    ``shared=False``: a size per copy (an array), for planning the groups.
    """
    if align > 1:
        n = align * (n // align)
        lo, hi = (lo // align) * align, np.minimum(-(-hi // align) * align, n)
    if shared:
        size = int(np.clip((hi - lo).max(), align, n))
        size = min(-(-size // align) * align, n)
    else:
        size = np.minimum(-(-np.clip(hi - lo, align, n) // align) * align, n)
    start = np.clip(lo, 0, n - size)
    if align > 1:
        start = (start // align) * align
    return start, size


def _next_stride(plan: LocalPlan, index: int, axis: int) -> int:
    """Stride of the pooling that next reads the output of op ``index`` (1 if a convolution does first)."""
    for op in plan.ops[index + 1:]:
        if op.kind == "conv":
            return 1
        if op.kind in ("maxpool", "avgpool"):
            return op.stride[axis]
    return 1


def _plan_axis(
    plan: LocalPlan, first: np.ndarray, stop: np.ndarray, axis: int, shared: bool = True,
) -> list[tuple[np.ndarray, int]]:
    """Windows along ``axis`` (starts per copy, shared size): the input's, then each op's output."""
    n = plan.sizes[0][axis]
    first_op = plan.ops[0]
    align = first_op.stride[axis] if first_op.kind in ("maxpool", "avgpool") else _next_stride(plan, -1, axis)
    windows = [_fit(first, stop, n, align, shared)]
    for index, op in enumerate(plan.ops):
        start, size = windows[-1]
        n = plan.sizes[index][axis]
        if op.kind == "conv":
            p = op.radius[axis]
            windows.append(_fit(np.maximum(start - p, 0), np.minimum(start + size + p, n), n,
                                _next_stride(plan, index, axis), shared))
        elif op.kind in ("maxpool", "avgpool"):
            k = op.stride[axis]
            windows.append((start // k, size // k))
        else:
            windows.append((start, size))
    return windows


def conv_cost(plan: LocalPlan, windows: list[tuple[int, int]] | None = None) -> float:
    """Multiply-adds of the convolutions for one copy: over output windows [per op, (rows, columns)] or full maps."""
    total = 0.0
    for index, op in enumerate(plan.ops):
        if op.kind == "conv":
            h, w = windows[index] if windows is not None else plan.sizes[index + 1]
            total += float(h) * float(w) * float(op.weight.numel())  # type: ignore[union-attr]
    return total


def _grid(rows: np.ndarray, cols: np.ndarray, height: int, width: int, device: torch.device):
    """Index tensors (B, 1, 1), (B, height, 1), (B, 1, width) of windows starting at ``rows``, ``cols``."""
    b = torch.arange(rows.size, device=device)[:, None, None]
    r = torch.from_numpy(rows).to(device)[:, None, None] + torch.arange(height, device=device)[None, :, None]
    c = torch.from_numpy(cols).to(device)[:, None, None] + torch.arange(width, device=device)[None, None, :]
    return b, r, c


def _windowed(model: SiameseNet, ctx: LocalContext, x: torch.Tensor, rows, cols) -> torch.Tensor:
    """Embeddings of copies ``x`` [shape=(B, n_mels, n_frames)] along the windows of :func:`_plan_axis`."""
    plan, device = ctx.plan, x.device
    (r, hh), (c, ww) = rows[0], cols[0]
    b, ri, ci = _grid(r, c, hh, ww, device)
    h = model.normalize(x)[b, ri, ci].unsqueeze(1)  # (B, 1, hh, ww)
    for index, op in enumerate(plan.ops):
        if op.kind != "conv":
            h = _apply(op, h)
            continue
        (r_out, h_out), (c_out, w_out) = rows[index + 1], cols[index + 1]
        p_r, p_c = op.radius
        # the base's padded input over the output window and its halo, then this copy's window on top
        _, sr, sc = _grid(r_out, c_out, h_out + 2 * p_r, w_out + 2 * p_c, device)
        slab = ctx.inputs[index][sr, sc]  # (B, h_out + 2 p, w_out + 2 p, C)
        (r_in, h_in), (c_in, w_in) = rows[index], cols[index]
        _, wr, wc = _grid(r_in + p_r, c_in + p_c, h_in, w_in, device)  # padded coordinates
        slab[b, wr - torch.from_numpy(r_out).to(device)[:, None, None],
             wc - torch.from_numpy(c_out).to(device)[:, None, None]] = h.permute(0, 2, 3, 1).to(slab.dtype)
        h = _apply(op, slab.permute(0, 3, 1, 2))  # channels-last strides: the fast layout for CPU pooling
    (r, hh), (c, ww) = rows[-1], cols[-1]
    features = ctx.features.expand(x.shape[0], -1, -1, -1).clone()
    _, fr, fc = _grid(r, c, hh, ww, device)
    features[b, fr, fc] = h.permute(0, 2, 3, 1).to(features.dtype)
    return _finish(model, plan, features.permute(0, 3, 1, 2))


def embed_local(
    model: SiameseNet, ctx: LocalContext, x: np.ndarray, device: torch.device, *, batch_size: int = 8,
    max_fraction: float = 0.5, full_batch: int = FULL_PASS_BATCH,
) -> np.ndarray:
    """Embeddings of copies of ``ctx.base`` [shape=(B, n_mels, n_frames)] -> [shape=(B, D), float32].

    Call in inference mode (eval, no grad). Copies are grouped by the size of what
    they change; a group whose windows would cost more than ``max_fraction`` of the
    full pass's convolutions (:func:`conv_cost`) runs the full forward pass instead,
    ``full_batch`` copies at a time.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], ctx.embedding.shape[0]), dtype=np.float32)
    if x.shape[0] == 0:
        return out
    diff = x != ctx.base[None]
    (r0, r1), (c0, c1) = _changed(diff, 2), _changed(diff, 1)
    unchanged = (r1 == r0) | (c1 == c0)
    out[unchanged] = ctx.embedding
    todo = np.flatnonzero(~unchanged)
    # group copies whose windows at the last convolution (the costliest) have similar sizes
    last_conv = max(i for i, op in enumerate(ctx.plan.ops) if op.kind == "conv") + 1
    height = _plan_axis(ctx.plan, r0[todo], r1[todo], 0, shared=False)[last_conv][1]
    width = _plan_axis(ctx.plan, c0[todo], c1[todo], 1, shared=False)[last_conv][1]
    todo = todo[np.lexsort((width, height))]
    full_cost = conv_cost(ctx.plan)
    for start in range(0, todo.size, batch_size):
        group = todo[start:start + batch_size]
        rows = _plan_axis(ctx.plan, r0[group], r1[group], 0)
        cols = _plan_axis(ctx.plan, c0[group], c1[group], 1)
        part = torch.from_numpy(x[group]).to(device)
        if conv_cost(ctx.plan, [(rw[1], cw[1]) for rw, cw in zip(rows[1:], cols[1:])]) > max_fraction * full_cost:
            emb = torch.cat([model.embed(part[i:i + full_batch]) for i in range(0, len(part), full_batch)])
        else:
            emb = _windowed(model, ctx, part, rows, cols)
        out[group] = emb.float().cpu().numpy()
    return out
