"""The known classes of each dataset, available without a built feature store.

Class ids are strings everywhere: AudioMNIST speakers are two-digit strings
("01".."60"); ESC-50 categories are spelled exactly as ``meta/esc50.csv``
spells them ("glass_breaking"), listed here in the order of their ``target``
index (0..49).
"""

from __future__ import annotations

from siamese_audio.errors import SplitError

AUDIOMNIST_SPEAKERS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(1, 61))

ESC50_CATEGORIES: tuple[str, ...] = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)

KNOWN_CLASSES: dict[str, tuple[str, ...]] = {
    "audiomnist": AUDIOMNIST_SPEAKERS,
    "esc50": ESC50_CATEGORIES,
}

DATASETS: tuple[str, ...] = tuple(KNOWN_CLASSES)


def known_classes(dataset: str) -> tuple[str, ...]:
    """The classes of ``dataset``, in the dataset's own order.

    Parameters
    ----------
    dataset : str
        ``"audiomnist"`` or ``"esc50"``.

    Returns
    -------
    tuple of str
        60 speaker ids for AudioMNIST, 50 category names for ESC-50.

    Raises
    ------
    SplitError
        ``dataset`` is not one of :data:`DATASETS`.
    """
    try:
        return KNOWN_CLASSES[dataset]
    except (KeyError, TypeError):
        raise SplitError(f"Expected a dataset among {list(DATASETS)}. Got {dataset!r}.") from None
