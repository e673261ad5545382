"""A compact CNN to train from scratch, as a base (issue 29's lever: pip-counting needs no ImageNet).

Hand-written because keras.applications has no small network meant for random init at 96-160 px: MobileNet-style,
a strided 3x3 stem, then four stages of two [depthwise 3x3, BN, ReLU, pointwise 1x1, BN, ReLU] blocks, each stage
ending in a 2x2 max-pool; widths WIDTHS x alpha. Depthwise + 1x1 Conv2D rather than SeparableConv2D so that
backbones.reseed re-draws every kernel from fixed seeds (it reads each layer's `kernel`). Input: float
x / 127.5 - 1 (backbones.front's default normalisation); output: the last feature map, 1/32 of the input side.
"""
from __future__ import annotations

import keras
from keras import layers

WIDTHS = (32, 64, 128, 256, 384)  # stem, then the four stages


def _bn_relu(x, name: str):
    return layers.ReLU(name=f"{name}_relu")(layers.BatchNormalization(name=f"{name}_bn")(x))


def compact_cnn(input_shape, alpha: float = 1.0, **_) -> keras.Model:
    """The base at `input_shape` (S, S, 3), widths scaled by `alpha` (at least 8 channels)."""
    widths = [max(8, int(round(w * float(alpha)))) for w in WIDTHS]
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn_relu(x, "stem")
    for stage, filters in enumerate(widths[1:], start=1):
        for block in (1, 2):
            name = f"stage{stage}_{block}"
            x = _bn_relu(layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x), f"{name}_dw")
            x = _bn_relu(layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x), f"{name}_pw")
        x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
    return keras.Model(inputs, x, name="compact_cnn")
