"""Photo augmentation: seeded Keras preprocessing layers on pixel values 0..255 (as float).

They sit at the front of the training model only (after the uint8 input, before the rescaling), so
they run on the accelerator and never reach the saved or exported model. No left-right flip by
default: playing cards and banknotes are not mirror-symmetric.
"""
from __future__ import annotations

import keras
from keras import layers

AUGMENT_DEFAULTS = {"crop": 0.1, "scale": 0.1, "brightness": 0.2, "rotate": 0.0, "contrast": 0.0, "flip": False}


def config(augment) -> dict | None:
    """The recipe's `augment` (false | true | {crop, scale, brightness, rotate, contrast, flip}) over the defaults."""
    if not augment:
        return None
    return {**AUGMENT_DEFAULTS, **(augment if isinstance(augment, dict) else {})}


def augmenter(augment, seed: int) -> keras.Sequential | None:
    """A Sequential of the enabled random changes, or None when augmentation is off.

    crop: a random window up to `crop` smaller, scaled back to full size (zoom in + shift); scale:
    random zoom in or out by up to the fraction; brightness: add up to +-fraction of the range
    (clipped to 0..255); rotate: up to +-fraction of a full turn (0.03 = +-11 degrees: a hand-held
    photo); contrast: scale the deviation from the mean by 1 +- fraction; flip: random left-right.
    All are the identity outside training; a knob at 0 adds no layer.
    """
    cfg = config(augment)
    if cfg is None:
        return None
    parts = [layers.Rescaling(1.0, name="aug_float", dtype="float32")]  # uint8 -> float, same values
    if cfg["crop"]:  # a random window: zoom in by up to `crop`, then shift by up to half of that
        c = float(cfg["crop"])
        parts += [layers.RandomZoom((-c, 0.0), fill_mode="reflect", seed=seed, name="aug_crop", dtype="float32"),
                  layers.RandomTranslation(c / 2, c / 2, fill_mode="reflect", seed=seed + 4, name="aug_shift",
                                           dtype="float32")]
    if cfg["scale"]:
        s = float(cfg["scale"])
        parts.append(layers.RandomZoom((-s, s), fill_mode="reflect", seed=seed + 1, name="aug_scale",
                                       dtype="float32"))
    if cfg["brightness"]:
        parts.append(layers.RandomBrightness(float(cfg["brightness"]), value_range=(0, 255), seed=seed + 2,
                                             name="aug_brightness", dtype="float32"))
    if cfg["rotate"]:
        parts.append(layers.RandomRotation(float(cfg["rotate"]), fill_mode="reflect", seed=seed + 5,
                                           name="aug_rotate", dtype="float32"))
    if cfg["contrast"]:  # RandomContrast clips to value_range, like brightness
        parts.append(layers.RandomContrast(float(cfg["contrast"]), value_range=(0, 255), seed=seed + 6,
                                           name="aug_contrast", dtype="float32"))
    if cfg["flip"]:
        parts.append(layers.RandomFlip("horizontal", seed=seed + 3, name="aug_flip", dtype="float32"))
    return keras.Sequential(parts, name="augment")
