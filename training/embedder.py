"""A trained :class:`~training.model.SiameseNet` as an evaluation ``Embedder`` (NumPy in, NumPy out).

``similarity`` returns a score to rank by that does not saturate: the head's
logit (a difference unit, a cosine or minus a squared distance, by the head), or
minus the distance (contrastive training).
A float32 sigmoid of the logit is exactly 1.0 above a logit of about 16.7
(and 0.0 below about -103), so ranking sigmoids ties supports the network tells
apart; ``probability`` gives the sigmoid where a probability is to be shown.
The head runs in float32 even on CUDA (bf16 autocast is for the encoder): a
bf16 logit keeps 8 bits of mantissa and would tie close scores again.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.training.incremental import LocalContext, embed_local, local_context
from siamese_audio.training.model import SiameseNet
from siamese_audio.training.precision import resolve_precision


def autocast_context(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA unless ``precision`` is ``"fp32"``; on the CPU only when it is ``"bf16"``.

    ``"bf16-native"`` is first resolved for ``device`` (:func:`~siamese_audio.training.precision.resolve_precision`):
    bf16 on CUDA and on a CPU with bf16 in hardware, none on other CPUs.
    """
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    if device.type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CPU_FORWARD_BATCH = 8

#: ``similarity_kind`` values: the head's logit, or the embeddings' negative distance.
SIMILARITY_KINDS = ("logit", "distance")


def similarity_kind(loss: str) -> str:
    """How a network trained with ``loss`` scores pairs: ``"distance"`` (contrastive) or ``"logit"`` (the rest)."""
    return "distance" if loss == "contrastive" else "logit"


class TorchEmbedder:
    """Wraps a network for :func:`evaluation.evaluator.evaluate_one_shot`.

    Parameters
    ----------
    model : SiameseNet
        Put in eval mode while embedding and scoring; its previous mode is restored.
    device : torch.device
    batch_size : int
        Clips per forward pass on CUDA; on the CPU at most :data:`CPU_FORWARD_BATCH`
        (large batches thrash the CPU caches: with the report-shaped encoder on
        64 x 64 inputs, 8 clips a pass ran 1.4x faster per clip than 64).
    similarity_kind : str
        ``"logit"``: the head's logit (:meth:`SiameseNet.logits`: the difference
        head's unit, a cosine, or minus a squared distance); ``"distance"``: minus
        the contrastive distance. Scores are ranked as they are, never squashed
        through a sigmoid (whose float32 value is exactly 1.0 above a logit of
        ~16.7, which would tie the top scores).
    precision : str
        ``"auto"`` or ``"bf16"``: bf16 autocast on CUDA for the encoder; ``"fp32"``: float32
        everywhere. The similarity head always runs in float32.
    channels_last : bool
        On the CPU, convert the model's convolution weights to channels-last strides
        (in place; for a model the embedder owns, as :func:`~training.checkpoint.load_embedder`'s):
        PyTorch's CPU max-pooling is ~10x faster in that layout, and the ``cpu-esc50``
        encoder runs 1.3-1.4x faster per clip (same embeddings up to float rounding).

    Explanations embed perturbed copies of a support with :meth:`embed_local`
    (incremental embedding, :mod:`~siamese_audio.training.incremental`) on the CPU;
    on CUDA :meth:`local_context` returns ``None`` and they use full batches.
    """

    def __init__(
        self, model: SiameseNet, device: torch.device, *, batch_size: int = 64, similarity_kind: str = "logit",
        precision: str = "auto", channels_last: bool = False,
    ) -> None:
        if similarity_kind not in SIMILARITY_KINDS:
            raise TrainingError(f"Expected similarity_kind among {list(SIMILARITY_KINDS)}. Got {similarity_kind!r}.")
        self.model = model
        self.device = device
        self.batch_size = batch_size if torch.device(device).type == "cuda" else min(batch_size, CPU_FORWARD_BATCH)
        self.similarity_kind = similarity_kind
        self.precision = precision
        self.channels_last = bool(channels_last) and torch.device(device).type == "cpu"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    @contextlib.contextmanager
    def _inference(self):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), autocast_context(self.device, self.precision):
                yield
        finally:
            self.model.train(was_training)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Spectrograms [shape=(B, n_mels, n_frames)] -> embeddings [shape=(B, fc_units), float32]."""
        x = np.asarray(x, dtype=np.float32)
        out = []
        with self._inference():
            for start in range(0, x.shape[0], self.batch_size):
                part = torch.from_numpy(np.ascontiguousarray(x[start:start + self.batch_size])).to(self.device)
                out.append(self.model.embed(part).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.model.config.fc_units), dtype=np.float32)
        return np.concatenate(out).astype(np.float32, copy=False)

    def local_context(self, base: np.ndarray) -> LocalContext | None:
        """Cached feature maps of ``base`` [shape=(n_mels, n_frames)] for :meth:`embed_local`.

        ``None`` where the network is not one incremental embedding applies to
        (:func:`~siamese_audio.training.incremental.local_plan`), and on CUDA (full
        batches there; the incremental path has only been measured on a CPU).
        """
        if torch.device(self.device).type != "cpu":
            return None
        with self._inference():
            return local_context(self.model, base, self.device)

    def embed_local(self, context: LocalContext, x: np.ndarray) -> np.ndarray:
        """:meth:`embed` of copies of ``context.base`` [shape=(B, n_mels, n_frames)], recomputing only what changed.

        Equal to :meth:`embed` up to float rounding; copies that change most of
        the clip run the full forward pass.
        """
        with self._inference():
            return embed_local(self.model, context, x, self.device, batch_size=self.batch_size)

    def _head(self, a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        """Logits (or negative distances) of embedding pairs, in float32 without autocast."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)
                tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).to(self.device)
                if self.similarity_kind == "distance":
                    return -self.model.distance(ta, tb).float()
                return self.model.logits(ta, tb).float()
        finally:
            self.model.train(was_training)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Score to rank pairs by, [shape=(P, D)] each -> [shape=(P,), float32]; higher is more similar.

        The head's logit (``"logit"``) or minus the distance (``"distance"``):
        unbounded, so that scores the network tells apart stay apart.
        """
        return self._head(a, b).cpu().numpy().astype(np.float32, copy=False)

    def probability(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Probability that each pair is of one class, the sigmoid of the logit, [shape=(P,), float32].

        For showing a probability only; rank by :meth:`similarity`, which does
        not saturate. Only the difference head's unit is a probability's logit
        (cosine and euclidean heads, and contrastive networks, have none).
        """
        head = getattr(self.model.config, "head", "difference")
        if self.similarity_kind != "logit" or head != "difference":
            raise TrainingError(f"This network (head {head!r}, scores {self.similarity_kind!r}) has no probability "
                                f"head; use similarity() to rank pairs.")
        return torch.sigmoid(self._head(a, b)).cpu().numpy().astype(np.float32, copy=False)


def parametrised_layers(model: SiameseNet) -> list[tuple[str, torch.nn.Module]]:
    """Modules holding their own parameters, from the top of the network down.

    The order is the order in which a forward pass (embedding two clips, then
    scoring the pair) calls them, reversed: the head first, then the encoder's
    layers from the last applied to the first (registration order can differ:
    a projection registered after the convolutions runs after them). Modules a
    forward pass never calls (the difference head of a cosine network) are left
    out: re-initialising them changes no score, and a cascade stage made of one
    would report an explanation that "survived" by construction
    (:func:`unused_layers` lists them).
    """
    named = [(name, module) for name, module in model.named_modules()
             if name and any(True for _ in module.parameters(recurse=False))]
    called: list[str] = []
    handles = [module.register_forward_hook(lambda *_, name=name: called.append(name)) for name, module in named]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            embedded = model.embed(torch.zeros((2, *model.encoder.input_shape), device=device))
            model.logits(embedded[:1], embedded[1:])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    modules = dict(named)
    return [(name, modules[name]) for name in list(dict.fromkeys(called))[::-1]]


def unused_layers(model: SiameseNet) -> list[str]:
    """Names of the parametrised modules a forward pass never calls (left out of the cascade)."""
    used = {name for name, _ in parametrised_layers(model)}
    return [name for name, module in model.named_modules()
            if name and name not in used and any(True for _ in module.parameters(recurse=False))]


def randomisation_cascade(embedder: TorchEmbedder, *, seed: int) -> Iterator[tuple[str, TorchEmbedder]]:
    """Model-parameter randomisation (Adebayo et al., 2018): a copy re-initialised from the top down.

    Yields ``(name, embedder)`` once per parametrised layer the forward pass
    uses (:func:`parametrised_layers`): first with the top one (the head, when
    the similarity calls it) re-initialised, then also
    the layer below it, and so on to the first layer. Layers are re-initialised
    with their own ``reset_parameters`` (PyTorch's default init; a batch norm's
    also resets its running statistics) under a generator seeded by ``seed``.
    The input standardisation (buffers of the network itself, not a layer) is
    kept. One copy of the model is randomised further at each step, so use each
    stage before drawing the next.
    """
    model = copy.deepcopy(embedder.model)
    device = torch.device(embedder.device)
    devices = [device.index or 0] if device.type == "cuda" else []
    for index, (name, module) in enumerate(parametrised_layers(model)):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed) * 1000 + index)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                with torch.no_grad():
                    for param in module.parameters(recurse=False):
                        param.normal_(0.0, 0.02)
        yield name, TorchEmbedder(model, embedder.device, batch_size=embedder.batch_size,
                                  similarity_kind=embedder.similarity_kind, precision=embedder.precision,
                                  channels_last=embedder.channels_last)
