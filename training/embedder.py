"""A trained :class:`~training.model.SiameseNet` as an evaluation ``Embedder`` (NumPy in, NumPy out)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import torch

from siamese_audio.training.model import SiameseNet


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CPU_FORWARD_BATCH = 8


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
        ``"sigmoid"``: sigmoid of the head's logit (bce / mse training);
        ``"distance"``: ``1 / (1 + distance)`` (contrastive training).
    autocast : bool
        bf16 autocast on CUDA (evaluation). False runs in float32 everywhere:
        explanations compare similarities that differ by 1e-3..1e-2, near
        bf16's precision.
    """

    def __init__(
        self, model: SiameseNet, device: torch.device, *, batch_size: int = 64, similarity_kind: str = "sigmoid",
        autocast: bool = True,
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size if torch.device(device).type == "cuda" else min(batch_size, CPU_FORWARD_BATCH)
        self.similarity_kind = similarity_kind
        self.autocast = autocast

    @contextlib.contextmanager
    def _inference(self):
        was_training = self.model.training
        self.model.eval()
        try:
            precision = autocast_context(self.device) if self.autocast else contextlib.nullcontext()
            with torch.no_grad(), precision:
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

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity in [0, 1] of embedding pairs, [shape=(P, D)] each -> [shape=(P,), float32]."""
        with self._inference():
            ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)
            tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)).to(self.device)
            if self.similarity_kind == "distance":
                score = 1.0 / (1.0 + self.model.distance(ta, tb))
            else:
                score = torch.sigmoid(self.model.logits(ta, tb).float())
        return score.float().cpu().numpy().astype(np.float32, copy=False)


def parametrised_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules holding their own parameters, from the top of the network down (head first).

    The order is the reverse of registration, which for :class:`SiameseNet` is
    the head, then the encoder's layers from the last to the first.
    """
    layers = [(name, module) for name, module in model.named_modules()
              if name and any(True for _ in module.parameters(recurse=False))]
    return layers[::-1]


def randomisation_cascade(embedder: TorchEmbedder, *, seed: int) -> Iterator[tuple[str, TorchEmbedder]]:
    """Model-parameter randomisation (Adebayo et al., 2018): a copy re-initialised from the top down.

    Yields ``(name, embedder)`` once per parametrised layer: first with the head
    re-initialised, then also the layer below it, and so on to the first
    convolution. Layers are re-initialised with their own ``reset_parameters``
    (PyTorch's default init) under a generator seeded by ``seed``. One copy of
    the model is randomised further at each step, so use each stage before
    drawing the next. The input standardisation (a buffer, not a learned layer)
    is kept.
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
                                  similarity_kind=embedder.similarity_kind, autocast=embedder.autocast)
