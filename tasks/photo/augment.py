"""Photo augmentation: seeded Keras preprocessing layers on pixel values 0..255 (as float).

They sit at the front of the training model only (after the uint8 input, before the rescaling), so
they run on the accelerator and never reach the saved or exported model. No left-right flip by
default: playing cards and banknotes are not mirror-symmetric (a mirrored card is not a card). A half
turn is allowed where the data is (`turn180`: a card upside down is the same card).
"""
from __future__ import annotations

import keras
from keras import layers, ops

AUGMENT_DEFAULTS = {"crop": 0.1, "scale": 0.1, "brightness": 0.2, "rotate": 0.0, "contrast": 0.0, "flip": False,
                    "turn180": False}


def config(augment) -> dict | None:
    """The recipe's `augment` (false | true | {crop, scale, brightness, rotate, contrast, flip, turn180}) over the
    defaults."""
    if not augment:
        return None
    return {**AUGMENT_DEFAULTS, **(augment if isinstance(augment, dict) else {})}


def augmenter(augment, seed: int) -> keras.Sequential | None:
    """A Sequential of the enabled random changes, or None when augmentation is off.

    crop: a random window up to `crop` smaller, scaled back to full size (zoom in + shift); scale:
    random zoom in or out by up to the fraction; brightness: add up to +-fraction of the range
    (clipped to 0..255); rotate: up to +-fraction of a full turn (0.03 = +-11 degrees: a hand-held
    photo); contrast: scale the deviation from the mean by 1 +- fraction; flip: random left-right (a
    mirror image); turn180: half of the images turned upside down (both axes flipped at once, never one).
    All are the identity outside training; a knob at 0 adds no layer.
    """
    cfg = config(augment)
    if cfg is None:
        return None
    parts = [layers.Rescaling(1.0, name="aug_float", dtype="float32")]  # uint8 -> float, same values
    if cfg["turn180"]:
        parts.append(RandomTurn180(seed=seed + 8, name="aug_turn180", dtype="float32"))
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


@keras.saving.register_keras_serializable(package="tlpipe")
class RandomTurn180(layers.Layer):
    """Each image turned by 180 degrees (rows and columns reversed together) with probability 1/2.

    Written here because Keras' RandomFlip("horizontal_and_vertical") draws the two axes independently,
    so three quarters of its outputs would include a mirror image; RandomRotation(0.5) resamples the
    pixels. A half turn is exact. Seeded like Keras' own random layers; the identity outside training.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training:
            return x
        turn = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.generator) < 0.5
        return ops.where(turn, ops.flip(ops.flip(x, axis=1), axis=2), x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
