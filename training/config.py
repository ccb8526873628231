"""Model and training configurations: frozen dataclasses, presets, TOML overrides.

The search space is the report's Table 2.2 (1-4 conv layers, filters 12/32/64,
max or average pooling, FC 1024/2048/4096, absolute or squared difference,
binary cross-entropy / MSE / contrastive loss, dropout 0/0.25/0.5, 2/4/6
positive pairs, ratios 1:1 1:2 1:3 2:1 3:1). Categorical choices are checked
against that space; sizes (filters, kernels, FC units) accept any positive
integer so that the ``tiny`` preset can run in seconds on a CPU.

A TOML file overrides a preset field by field::

    preset = "report-esc50"        # optional; the CLI's --preset wins if both given

    [model]
    fc_units = 1024
    conv_filters = [64, 32]
    conv_kernels = [5, 5]

    [train]
    pos = 4
    ratio = "1:2"                  # or [1, 2]
    lr = 0.0005
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamese_audio.errors import TrainingError
from siamese_audio.files import MIB, read_regular

POOLINGS = ("max", "avg")
INPUT_NORMS = ("none", "standardize", "per_band")
MERGES = ("squared", "abs")
GLOBAL_POOLS = ("none", "avg", "max", "avgmax")
HEADS = ("difference", "cosine", "euclidean")
INITS = ("glorot", "torch")
LOSSES = ("bce", "mse", "contrastive", "bce-all", "supcon", "proto")
BATCHES = ("pairs", "classes")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
#: ``"auto"`` (bf16 autocast on CUDA, float32 on the CPU), ``"bf16"`` (bf16 autocast on either), ``"fp32"``,
#: ``"bf16-native"`` (bf16 where the hardware has it: CUDA, a CPU with AVX-512 BF16 / AMX; float32 on other
#: CPUs, where emulated bf16 is several times slower; :mod:`~siamese_audio.training.precision`).
PRECISIONS = ("auto", "bf16", "fp32", "bf16-native")

#: Losses of each batch kind: Algorithm 2's sampled pairs, or every pair of P classes x K clips.
LOSSES_OF_BATCH = {"pairs": ("bce", "mse", "contrastive"), "classes": ("bce-all", "supcon", "proto")}
#: The similarity head each loss trains (and that evaluation ranks by).
HEAD_OF_LOSS = {"bce": "difference", "mse": "difference", "contrastive": "difference", "bce-all": "difference",
                "supcon": "cosine", "proto": "euclidean"}


def _positive_int(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TrainingError(f"{owner}: expected {field} to be a positive integer. Got {value!r} instead.")


def _non_negative_int(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TrainingError(f"{owner}: expected {field} to be a non-negative integer. Got {value!r} instead.")


def _choice(owner: str, field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainingError(f"{owner}: expected {field} in {choices}. Got {value!r} instead.")


def _probability(owner: str, field: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise TrainingError(f"{owner}: expected {field} to be a number in [0, 1). Got {value!r} instead.")


def _number(owner: str, field: str, value: Any, *, minimum: float = 0.0, strict: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise TrainingError(f"{owner}: expected {field} to be a finite number {bound}. Got {value!r} instead.")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the Siamese network (one encoder shared by both towers).

    The defaults are the authors' network; the ``cpu-*`` presets use the other
    options (batch norm, global pooling, per-band standardisation, time pooling,
    a cosine head), all recorded in the checkpoint.

    Attributes
    ----------
    conv_filters : tuple[int, ...]
        Filters of each conv block, 1 to 4 blocks (report: 64, 32, 12).
    conv_kernels : tuple[int, ...]
        Square kernel size of each conv block, same length (report: 5, 5, 3).
    pooling : str
        ``"max"`` or ``"avg"``; every block pools 2 x 2 (floor), after ReLU.
    fc_units : int
        Width of the embedding layer (report: 4096). With ``global_pool="none"``
        a fully connected layer with ReLU on the flattened feature maps (the
        report); otherwise a linear projection of the pooled channels.
    merge : str
        ``"squared"`` (report) or ``"abs"`` element-wise difference of embeddings
        (the ``difference`` head).
    dropout_conv, dropout_fc : float
        Dropout after each conv block / after the embedding layer (report: 0.0).
    input_norm : str
        ``"none"`` (the authors' code: raw dB values in); ``"standardize"``: one
        mean and standard deviation; ``"per_band"``: a mean and standard
        deviation per mel band. Statistics come from training clips when training
        starts and are kept in the weights (so evaluation applies them too).
    batch_norm : bool
        Batch normalisation after each convolution (before the ReLU).
    global_pool : str
        ``"none"`` (report: flatten the last feature maps); ``"avg"``, ``"max"`` or
        ``"avgmax"`` (mean over mel bands, then mean and max over time,
        concatenated): any input length works, so random time crops can train it.
    time_pool : int
        Average the input over this many frames before the first convolution
        (inside the model: the store keeps the full-resolution features).
    freq_pool : int
        Average the input over this many mel bands, likewise (after the per-band
        standardisation).
    head : str
        How two embeddings become a similarity (a logit; rank by it):
        ``"difference"`` (report: merged difference -> one linear unit),
        ``"cosine"`` (cosine of the embeddings) or ``"euclidean"`` (minus the
        squared Euclidean distance).
    init : str
        ``"glorot"`` (the authors' Glorot-uniform weights, zero biases) or
        ``"torch"`` (PyTorch's default initialisation).
    classifier_classes : int
        0 (none) or the number of training classes of an auxiliary linear
        classifier on the embedding (trained beside the pair loss when
        ``TrainConfig.aux_weight`` > 0; similarity never uses it).
    embed_center : bool
        Subtract the mean embedding of training clips (a buffer set during
        training, kept in the weights) before the head: with the cosine head this
        is "centre, then L2-normalise".
    tta_crops, tta_frames : int
        Test-time augmentation: embed a clip as the mean embedding of
        ``tta_crops`` windows of ``tta_frames`` frames, evenly spaced from its
        start to its end (1 and 0: the whole clip once). Used by every embedding
        made outside training (validation, evaluation, explanations).
    """

    conv_filters: tuple[int, ...] = (64, 32, 12)
    conv_kernels: tuple[int, ...] = (5, 5, 3)
    pooling: str = "max"
    fc_units: int = 4096
    merge: str = "squared"
    dropout_conv: float = 0.0
    dropout_fc: float = 0.0
    input_norm: str = "none"
    batch_norm: bool = False
    global_pool: str = "none"
    time_pool: int = 1
    freq_pool: int = 1
    head: str = "difference"
    init: str = "glorot"
    classifier_classes: int = 0
    embed_center: bool = False
    tta_crops: int = 1
    tta_frames: int = 0

    def __post_init__(self) -> None:
        owner = "Model config"
        for field in ("conv_filters", "conv_kernels"):
            value = getattr(self, field)
            if not isinstance(value, tuple) or not 1 <= len(value) <= 4:
                raise TrainingError(
                    f"{owner}: expected {field} to be a tuple of 1 to 4 integers. Got {value!r} instead."
                )
            for item in value:
                _positive_int(owner, field, item)
        if len(self.conv_filters) != len(self.conv_kernels):
            raise TrainingError(
                f"{owner}: expected conv_kernels to have one size per conv layer "
                f"({len(self.conv_filters)}). Got {len(self.conv_kernels)}: {self.conv_kernels!r}."
            )
        _choice(owner, "pooling", self.pooling, POOLINGS)
        _positive_int(owner, "fc_units", self.fc_units)
        _choice(owner, "merge", self.merge, MERGES)
        _probability(owner, "dropout_conv", self.dropout_conv)
        _probability(owner, "dropout_fc", self.dropout_fc)
        _choice(owner, "input_norm", self.input_norm, INPUT_NORMS)
        if not isinstance(self.batch_norm, bool):
            raise TrainingError(f"{owner}: expected batch_norm to be true or false. Got {self.batch_norm!r} instead.")
        _choice(owner, "global_pool", self.global_pool, GLOBAL_POOLS)
        _positive_int(owner, "time_pool", self.time_pool)
        _positive_int(owner, "freq_pool", self.freq_pool)
        _choice(owner, "head", self.head, HEADS)
        _choice(owner, "init", self.init, INITS)
        _non_negative_int(owner, "classifier_classes", self.classifier_classes)
        if not isinstance(self.embed_center, bool):
            raise TrainingError(f"{owner}: expected embed_center to be true or false. "
                                f"Got {self.embed_center!r} instead.")
        _positive_int(owner, "tta_crops", self.tta_crops)
        _non_negative_int(owner, "tta_frames", self.tta_frames)
        if self.tta_crops > 1 and not self.tta_frames:
            raise TrainingError(f"{owner}: tta_crops = {self.tta_crops} needs tta_frames (the window length). "
                                f"Got tta_frames = 0.")
        if self.tta_frames and self.global_pool == "none":
            raise TrainingError(f"{owner}: tta_frames needs a network that takes any input length "
                                f"(global_pool 'avg', 'max' or 'avgmax'). Got global_pool 'none'.")

    def embedding_input_shape(self, shape: tuple[int, int]) -> tuple[int, int, int]:
        """Shape ``(channels, height, width)`` of the last feature maps for input ``shape``.

        Raises
        ------
        TrainingError
            When the time pooling and the conv blocks' pooling would shrink the input to nothing.
        """
        height, width = shape[0] // self.freq_pool, shape[1] // self.time_pool
        for _ in self.conv_filters:
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            first = self.freq_pool > 1 or self.time_pool > 1
            pooled = f" (pooled by {self.freq_pool} x {self.time_pool} first)" if first else ""
            raise TrainingError(
                f"Model config: {len(self.conv_filters)} conv blocks pool the input {tuple(shape)} by "
                f"{2 ** len(self.conv_filters)}{pooled}; expected at least {2 ** len(self.conv_filters)} mels "
                f"and frames{' after that input pooling' if first else ''}. Use fewer conv layers"
                f"{' or smaller freq_pool / time_pool' if first else ''}."
            )
        return (self.conv_filters[-1], height, width)

    def min_frames(self) -> int:
        """Fewest input frames the network takes (random crops must be at least this long)."""
        return self.time_pool * 2 ** len(self.conv_filters)


@dataclass(frozen=True)
class TrainConfig:
    """How the network is trained and validated (Algorithms 1-2, and the CPU recipes).

    Attributes
    ----------
    loss : str
        With ``batch="pairs"`` (Algorithm 2's sampled pairs): ``"bce"`` (report;
        on logits), ``"mse"`` (on the sigmoid), or ``"contrastive"`` (on the
        embedding distance, with ``margin``). With ``batch="classes"`` (every pair
        of a batch of ``classes_per_batch`` x ``clips_per_class`` clips):
        ``"bce-all"`` (binary cross-entropy of the difference head over all
        pairs, positives and negatives weighted equally), ``"supcon"``
        (supervised contrastive / NT-Xent on cosine similarities divided by
        ``temperature``) or ``"proto"`` (prototypical: half of each class's clips
        make its prototype, the other half are classified by squared distance).
    batch : str
        ``"pairs"`` (report) or ``"classes"``.
    pos : int
        Positive pairs per training class per batch (report: 2 AudioMNIST, 4 ESC-50).
    ratio : tuple[int, int]
        Positive-to-negative ratio ``(p, n)``; ``neg = round(pos * n / p)``, at least 1.
    classes_per_batch, clips_per_class : int
        ``P`` and ``K`` of a ``"classes"`` batch (``P`` at most the training classes).
    temperature : float
        Of the ``supcon`` loss.
    lr : float
        Peak learning rate (Keras' Adam default, 0.001, for the report).
    optimizer : str
        ``"adam"`` (report) or ``"adamw"`` (decoupled ``weight_decay``).
    weight_decay : float
        L2 penalty (Adam) or decoupled decay (AdamW).
    lr_schedule : str
        ``"constant"`` (report) or ``"cosine"`` (decay to 0 at ``max_epochs``).
    warmup_epochs : int
        Epochs of linear warm-up from ``lr / warmup_epochs``.
    max_epochs : int
        Epochs at most; one epoch is one batch (report: 5000).
    max_minutes : float
        Wall-clock budget of the run in minutes, validations included (0: none).
        The schedule is set by epochs (so the same seed gives the same weights);
        the budget stops a run early, with a last validation, and says so.
    eval_every : int
        Epochs between validations (report: 100).
    eval_tasks : int
        One-shot tasks per validation (report: 300), spread over the
        validation classes: ``ceil(eval_tasks / n_classes)`` runs per class.
    patience : int
        Validations without improvement before stopping (report: 10).
    seed : int
        Seeds the weights, the batches, the augmentations and the validation tasks.
    ways : int
        Classes per one-shot task (report: 5).
    margin : float
        Margin of the contrastive loss (distance units).
    eval_batch_size : int
        Clips per forward pass when validating.
    crop_frames : int
        Train on a random window of this many stored frames of each clip
        (0: whole clips). Needs a global-pooling network.
    freq_masks, time_masks : int
        SpecAugment-style masks per training clip (0: none), set to the band mean
        (zero after standardisation).
    freq_mask_bands, time_mask_frames : int
        Largest width of a frequency mask (mel bands) and a time mask (stored frames).
    precision : str
        ``"auto"`` (bf16 autocast on CUDA, float32 on the CPU), ``"bf16"`` (bf16
        autocast on either), ``"fp32"``, or ``"bf16-native"`` (the CPU presets: bf16
        on CUDA and on a CPU with AVX-512 BF16 or AMX, where a CPU step runs ~1.4x
        faster; float32 on other CPUs, where emulated bf16 ran ~10x slower than
        float32: docs/results/precision-avx2.md). The loss and the similarity head run in float32.
    channels_last : bool
        On the CPU, train with the convolution weights in channels-last strides
        (PyTorch's CPU max-pooling is ~10x faster in that layout): a ``cpu-esc50``
        bf16 step ran 1.36-1.49x faster (batch 128 x 345 frames, 2 cores). No effect on CUDA.
    ema_decay : float
        0 (off) or the decay of an exponential moving average of the weights
        (and batch-norm statistics), updated after every step; validation scores
        the averaged weights and ``best.pt`` holds them.
    aux_weight : float
        Weight of an auxiliary cross-entropy over the training classes (a linear
        classifier on the embedding), added to the pair loss; 0: none.
    center_clips : int
        Training clips whose mean embedding is subtracted before the head
        (``ModelConfig.embed_center``), re-measured at every validation; 0: none.
    mix_prob : float
        Probability that a training clip is mixed, in the power domain, with
        another clip of the batch from another class, that clip ``mix_db`` dB
        (uniform in the range) below its own level.
    mix_db : tuple[float, float]
        Range of attenuations of the mixed-in clip, dB.
    gain_db, tilt_db : float
        Random gain (uniform in +-``gain_db`` dB) and spectral tilt (a linear ramp
        over the mel bands from -t to +t dB, t uniform in +-``tilt_db``) per clip.
    shift_bands : int
        Random shift of each clip by up to this many mel bands (edges repeated).
    stretch : float
        Random time stretch of each clip by a factor in ``1 +- stretch``
        (resampling the crop's window; needs ``crop_frames``).
    views : int
        Augmented copies of each clip of a class batch (each cropped, masked and
        levelled on its own draw); the copies are further positives of their class.
        1: each clip once.
    instance_weight : float
        Weight of a second supervised-contrastive term whose only positives are
        the other views of the same clip (instance discrimination, needs
        ``views >= 2``); 0: none.
    """

    loss: str = "bce"
    batch: str = "pairs"
    pos: int = 2
    ratio: tuple[int, int] = (1, 1)
    classes_per_batch: int = 32
    clips_per_class: int = 4
    temperature: float = 0.1
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    max_epochs: int = 5000
    max_minutes: float = 0.0
    eval_every: int = 100
    eval_tasks: int = 300
    patience: int = 10
    seed: int = 0
    ways: int = 5
    margin: float = 1.0
    eval_batch_size: int = 64
    crop_frames: int = 0
    freq_masks: int = 0
    freq_mask_bands: int = 0
    time_masks: int = 0
    time_mask_frames: int = 0
    precision: str = "auto"
    channels_last: bool = False
    ema_decay: float = 0.0
    aux_weight: float = 0.0
    center_clips: int = 0
    mix_prob: float = 0.0
    mix_db: tuple[float, float] = (5.0, 20.0)
    gain_db: float = 0.0
    tilt_db: float = 0.0
    shift_bands: int = 0
    stretch: float = 0.0
    views: int = 1
    instance_weight: float = 0.0

    def __post_init__(self) -> None:
        owner = "Training config"
        _choice(owner, "loss", self.loss, LOSSES)
        _choice(owner, "batch", self.batch, BATCHES)
        if self.loss not in LOSSES_OF_BATCH[self.batch]:
            raise TrainingError(
                f"{owner}: loss {self.loss!r} does not train on {self.batch!r} batches; expected one of "
                f"{LOSSES_OF_BATCH[self.batch]} (or batch = "
                f"{next(b for b, losses in LOSSES_OF_BATCH.items() if self.loss in losses)!r})."
            )
        for field in ("pos", "max_epochs", "eval_every", "eval_tasks", "patience", "eval_batch_size",
                      "classes_per_batch"):
            _positive_int(owner, field, getattr(self, field))
        from siamese_audio.evaluation.evaluator import MAX_BATCH_SIZE
        from siamese_audio.evaluation.tasks import MAX_TASKS

        for field, limit in (("eval_tasks", MAX_TASKS), ("eval_batch_size", MAX_BATCH_SIZE)):
            if getattr(self, field) > limit:
                raise TrainingError(f"{owner}: expected {field} at most {limit:,}. Got {getattr(self, field):,}.")
        if isinstance(self.clips_per_class, bool) or not isinstance(self.clips_per_class, int) \
                or self.clips_per_class < 2:
            raise TrainingError(
                f"{owner}: expected clips_per_class to be an integer >= 2 (a class needs a pair). "
                f"Got {self.clips_per_class!r} instead.")
        for field in ("warmup_epochs", "crop_frames", "freq_masks", "freq_mask_bands", "time_masks",
                      "time_mask_frames"):
            _non_negative_int(owner, field, getattr(self, field))
        if not isinstance(self.ratio, tuple) or len(self.ratio) != 2:
            raise TrainingError(
                f"{owner}: expected ratio to be a pair (positives, negatives) such as (1, 1). "
                f"Got {self.ratio!r} instead."
            )
        for item in self.ratio:
            _positive_int(owner, "ratio", item)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise TrainingError(f"{owner}: expected seed to be a non-negative integer. Got {self.seed!r} instead.")
        if not isinstance(self.ways, int) or isinstance(self.ways, bool) or self.ways < 2:
            raise TrainingError(f"{owner}: expected ways to be an integer >= 2. Got {self.ways!r} instead.")
        for field in ("lr", "margin", "temperature"):
            _number(owner, field, getattr(self, field))
        for field in ("weight_decay", "max_minutes"):
            _number(owner, field, getattr(self, field), strict=False)
        _choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        _choice(owner, "lr_schedule", self.lr_schedule, SCHEDULES)
        _choice(owner, "precision", self.precision, PRECISIONS)
        if not isinstance(self.channels_last, bool):
            raise TrainingError(f"{owner}: expected channels_last to be true or false. Got {self.channels_last!r}.")
        _probability(owner, "ema_decay", self.ema_decay)
        if not isinstance(self.mix_prob, (int, float)) or isinstance(self.mix_prob, bool) \
                or not 0.0 <= self.mix_prob <= 1.0:
            raise TrainingError(f"{owner}: expected mix_prob to be a number in [0, 1]. Got {self.mix_prob!r} instead.")
        for field in ("aux_weight", "gain_db", "tilt_db"):
            _number(owner, field, getattr(self, field), strict=False)
        _non_negative_int(owner, "center_clips", self.center_clips)
        _non_negative_int(owner, "shift_bands", self.shift_bands)
        _probability(owner, "stretch", self.stretch)
        if self.stretch and not self.crop_frames:
            raise TrainingError(f"{owner}: stretch = {self.stretch} resamples the crop's window; set crop_frames.")
        _positive_int(owner, "views", self.views)
        if self.views > 1 and self.batch != "classes":
            raise TrainingError(f"{owner}: views = {self.views} augments each clip of a class batch several times; "
                                f"set batch = 'classes' (got {self.batch!r}).")
        _number(owner, "instance_weight", self.instance_weight, strict=False)
        if self.instance_weight and (self.views < 2 or self.loss != "supcon"):
            raise TrainingError(f"{owner}: instance_weight = {self.instance_weight} contrasts a clip's views with "
                                f"every other view; set views >= 2 and loss = 'supcon' (got views = {self.views}, "
                                f"loss {self.loss!r}).")
        low_high = self.mix_db
        if (not isinstance(low_high, tuple) or len(low_high) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in low_high) or low_high[0] > low_high[1]):
            raise TrainingError(f"{owner}: expected mix_db to be two finite numbers [low, high] with low <= high "
                                f"(dB below the clip). Got {low_high!r} instead.")

    @property
    def neg(self) -> int:
        """Negative pairs per training class per batch: ``round(pos * n / p)``, at least 1."""
        return neg_count(self.pos, self.ratio)

    @property
    def augments(self) -> bool:
        """Whether training clips are cropped, masked or otherwise augmented after standardisation."""
        return bool(self.crop_frames or self.freq_masks or self.time_masks or self.shift_bands)

    @property
    def augments_levels(self) -> bool:
        """Whether training clips are mixed, gained or tilted in the dB domain (before standardisation)."""
        return bool(self.mix_prob or self.gain_db or self.tilt_db)


def check_compatible(model: ModelConfig, train: TrainConfig, input_shape: tuple[int, int]) -> None:
    """Refuse a model and training config that cannot work together on inputs of ``input_shape``.

    Raises
    ------
    TrainingError
        The loss trains another head than the model's; a crop or mask the input
        cannot hold; a crop given to a network that needs whole clips.
    """
    wanted = HEAD_OF_LOSS[train.loss]
    if model.head != wanted:
        raise TrainingError(
            f"Loss {train.loss!r} trains the {wanted!r} similarity head; the model config has head "
            f"{model.head!r}. Set [model] head = {wanted!r} or choose another loss."
        )
    n_mels, n_frames = input_shape
    model.embedding_input_shape(input_shape)
    if train.crop_frames:
        if model.global_pool == "none":
            raise TrainingError(
                f"crop_frames = {train.crop_frames} needs a network that takes any input length "
                "(global_pool 'avg', 'max' or 'avgmax'); this one flattens fixed-size feature maps.")
        if not model.min_frames() <= train.crop_frames <= n_frames:
            raise TrainingError(
                f"Expected crop_frames between {model.min_frames()} (what the network needs) and {n_frames} "
                f"(the stored clips' frames). Got {train.crop_frames}.")
    if model.tta_frames and not model.min_frames() <= model.tta_frames <= n_frames:
        raise TrainingError(
            f"Expected tta_frames between {model.min_frames()} (what the network needs) and {n_frames} "
            f"(the stored clips' frames). Got {model.tta_frames}.")
    if train.aux_weight and train.batch != "classes":
        raise TrainingError(f"aux_weight = {train.aux_weight} trains a classifier over the batch's classes; it needs "
                            f"batch = 'classes'. Got batch = {train.batch!r}.")
    if bool(train.center_clips) != model.embed_center:
        raise TrainingError(
            f"[model] embed_center = {str(model.embed_center).lower()} and [train] center_clips = "
            f"{train.center_clips} disagree: centring needs both (embed_center = true and center_clips > 0) "
            f"or neither.")
    if train.shift_bands >= n_mels:
        raise TrainingError(f"Expected shift_bands below {n_mels} (the mel bands). Got {train.shift_bands}.")
    if train.freq_mask_bands > n_mels:
        raise TrainingError(f"Expected freq_mask_bands at most {n_mels} (the mel bands). Got {train.freq_mask_bands}.")
    if train.time_mask_frames > n_frames:
        raise TrainingError(
            f"Expected time_mask_frames at most {n_frames} (the stored frames). Got {train.time_mask_frames}.")


def neg_count(pos: int, ratio: tuple[int, int]) -> int:
    """Negative pairs per class from ``pos`` and the ratio ``(p, n)`` (Algorithm 2, line 2).

    ``neg = pos * n / p`` rounded half up, at least 1: pos 4 at 2:1 gives 2 (the
    report's example), pos 2 at 1:3 gives 6, pos 2 at 3:1 gives 1.
    """
    p, n = ratio
    return max(1, math.floor(pos * n / p + 0.5))


#: The network of the CPU presets (chosen on validation classes; see docs/training.md and
#: docs/results/recipe-report.md): four conv blocks, per-band input statistics, avg+max pooling, a cosine head.
#: Test-time crops and centring (``tta_crops``, ``embed_center``) are options; neither won on validation.
CPU_MODEL = ModelConfig(conv_filters=(32, 64, 128, 256), conv_kernels=(3, 3, 3, 3), pooling="max", fc_units=128,
                        input_norm="per_band", batch_norm=True, global_pool="avgmax", time_pool=4, head="cosine",
                        init="torch")
#: Its training: supervised contrastive loss (temperature 0.1: 0.2 won 500-step validation runs but lost on the
#: full schedule's validation, docs/training.md) over every pair of 32 classes x 4 clips, AdamW, warm-up and
#: cosine decay, bf16 autocast steps where the CPU has bf16 in hardware (1.5x the float32 step rate on an
#: AVX-512 BF16 CPU; float32 elsewhere, where emulated bf16 is ~10x slower), random 4 s crops and
#: SpecAugment masks; a 20-minute budget on 2 cores, validations included. The other levers issue 20 measured
#: (weight average, auxiliary classifier, mixing, gain / tilt / band shifts / stretch) are options, off here:
#: none beat this on validation classes (benchmarks/bench_recipe.py).
CPU_TRAIN = TrainConfig(loss="supcon", batch="classes", classes_per_batch=32, clips_per_class=4, temperature=0.1,
                        lr=2e-3, optimizer="adamw", weight_decay=1e-4, lr_schedule="cosine", warmup_epochs=40,
                        max_epochs=1600, max_minutes=20.0, eval_every=100, eval_tasks=2000, patience=100,
                        crop_frames=345, freq_masks=2, freq_mask_bands=16, time_masks=2, time_mask_frames=34,
                        precision="bf16-native", channels_last=True)

PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    "report-audiomnist": (ModelConfig(), TrainConfig(pos=2, ratio=(1, 1))),
    "report-esc50": (ModelConfig(), TrainConfig(pos=4, ratio=(1, 1))),
    # The same recipe at each dataset's input size: ESC-50 128 x 431 (5 s), AudioMNIST 224 x 224 (1 s).
    "cpu-esc50": (CPU_MODEL, CPU_TRAIN),
    "cpu-audiomnist": (dataclasses.replace(CPU_MODEL, time_pool=2),
                       dataclasses.replace(CPU_TRAIN, crop_frames=180, time_mask_frames=18)),
    # Small enough for tests and CPU runs on 16 x 20 .. 64 x 64 inputs.
    "tiny": (
        ModelConfig(conv_filters=(12, 12), conv_kernels=(3, 3), fc_units=64, input_norm="standardize"),
        TrainConfig(pos=2, ratio=(1, 1), max_epochs=300, eval_every=10, eval_tasks=50, patience=5),
    ),
}


def preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    """Return the ``(ModelConfig, TrainConfig)`` of preset ``name``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise TrainingError(f"Expected a training preset among {sorted(PRESETS)}. Got {name!r} instead.") from None


def parse_ratio(value: Any) -> tuple[int, int]:
    """Parse ``"1:2"``, ``[1, 2]`` or ``(1, 2)`` into ``(1, 2)``."""
    if isinstance(value, str):
        parts = value.replace("÷", ":").split(":")
        try:
            parsed = tuple(int(p) for p in parts)
        except ValueError:
            parsed = ()
        if len(parsed) == 2:
            return parsed  # type: ignore[return-value]
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        return tuple(value)  # type: ignore[return-value]
    raise TrainingError(f"Expected ratio as 'p:n' or [p, n], such as '1:1'. Got {value!r} instead.")


def _apply(base: Any, table: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise TrainingError(f"{where}: expected keys among {sorted(names)}. Got unknown {unknown}.")
    values = dict(table)
    for key, value in values.items():
        if key == "ratio":
            values[key] = parse_ratio(value)
        elif isinstance(value, list):
            values[key] = tuple(value)
    return dataclasses.replace(base, **values)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of ``dataclasses.asdict`` (lists become tuples); unknown keys are an error."""
    return _apply(ModelConfig(), data, "Model config")


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of ``dataclasses.asdict`` (lists become tuples); unknown keys are an error."""
    return _apply(TrainConfig(), data, "Training config")


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The TOML document at ``path`` as a dict; ``what`` names the file in errors ("Space file").

    Raises
    ------
    TrainingError
        The file does not exist, or is not valid UTF-8 TOML.
    """
    path = Path(path)
    try:
        return tomllib.loads(read_regular(path, max_bytes=16 * MIB, what=what).decode("utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise TrainingError(f"{what} {path} cannot be read: {exc.strerror or exc}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{what} {path} is not valid TOML: {exc}") from None


def load_config(path: str | Path, *, preset_name: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """Read a TOML file of overrides on top of a preset.

    Parameters
    ----------
    path : str or Path
        TOML file with optional top-level ``preset`` and tables ``[model]`` and ``[train]``.
    preset_name : str, optional
        Base preset; wins over the file's ``preset``. Default ``report-audiomnist``.

    Raises
    ------
    TrainingError
        Unreadable file, unknown table or key, or an invalid value (named).
    """
    data = read_toml(path, "Training config file")
    unknown = sorted(set(data) - {"preset", "model", "train"})
    if unknown:
        raise TrainingError(
            f"Training config file {path}: expected top-level keys among ['model', 'preset', 'train']. "
            f"Got unknown {unknown}."
        )
    model, train = preset(preset_name or data.get("preset", "report-audiomnist"))
    for key in ("model", "train"):
        if key in data and not isinstance(data[key], dict):
            raise TrainingError(f"Training config file {path}: expected [{key}] to be a table.")
    model = _apply(model, data.get("model", {}), f"Training config file {path} [model]")
    train = _apply(train, data.get("train", {}), f"Training config file {path} [train]")
    return model, train
