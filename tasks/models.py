"""Model recipes by name, and transfer helpers.

Every model takes raw uint8 pixels [H, W, C] and rescales inside (Rescaling(1/255)), so the
exported TFLite model takes raw pixels too. Layer names are fixed ("conv1", "dense1", "head", ...)
so `transfer` can find the layers to copy.
"""
from __future__ import annotations

import keras
from keras import layers


def reference_cnn(num_classes: int, input_shape=(28, 28, 1)) -> keras.Model:
    """The reference CNN of the EMNIST -> MNIST transfer study."""
    return keras.Sequential([
        keras.Input(shape=input_shape, dtype="uint8", name="image"),
        layers.Rescaling(1.0 / 255, name="rescale"),
        layers.Conv2D(32, 3, activation="relu", name="conv1"),
        layers.Conv2D(64, 3, activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Dropout(0.25, name="drop1"),
        layers.Flatten(name="flatten"),
        layers.Dense(128, activation="relu", name="dense1"),
        layers.Dropout(0.5, name="drop2"),
        layers.Dense(num_classes, activation="softmax", name="head", dtype="float32"),
    ], name="reference_cnn")


def _conv_bn(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def bn_cnn(num_classes: int, input_shape=(28, 28, 1), width: int = 32) -> keras.Model:
    """Our recipe: three conv-BN-relu blocks (32, 64, 128 filters; pool after each of the first two),
    dropout, a BN dense layer of 256, dropout. Cheaper than the reference (fewer full-size convs)."""
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _conv_bn(x, width, "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv_bn(x, 2 * width, "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = _conv_bn(x, 4 * width, "conv3")
    x = layers.Dropout(0.25, name="drop1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, use_bias=False, name="dense1")(x)
    x = layers.BatchNormalization(name="dense1_bn")(x)
    x = layers.Activation("relu", name="dense1_relu")(x)
    x = layers.Dropout(0.5, name="drop2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="bn_cnn")


ARCHS = {"reference_cnn": reference_cnn, "bn_cnn": bn_cnn}

FREEZE_CHOICES = ("none", "conv", "conv_dense")


def build(arch: str, num_classes: int, input_shape=(28, 28, 1)) -> keras.Model:
    """A fresh model of recipe `arch` (a key of ARCHS)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes, input_shape=input_shape)


def _is_conv_part(layer) -> bool:
    """Layers of the convolutional feature extractor (conv and their batch norms)."""
    return layer.name.startswith("conv")


def _is_first_dense_part(layer) -> bool:
    return layer.name.startswith("dense1")


def transfer(source_model: keras.Model, num_classes: int, freeze: str = "conv") -> keras.Model:
    """A copy of `source_model` with a fresh last layer of `num_classes` outputs.

    All layers except the head are copied (same architecture, same weights); then
    freeze="none" trains everything (fine-tuning), "conv" freezes the conv layers (variant b),
    "conv_dense" freezes the conv layers and the first dense layer (variant c).
    Frozen BatchNorm layers run in inference mode (Keras 3 semantics of trainable=False).
    """
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {FREEZE_CHOICES}, got {freeze!r}")
    model = keras.models.clone_model(source_model)
    model.set_weights(source_model.get_weights())
    features = model.get_layer("head").input  # what the old head saw
    outputs = layers.Dense(num_classes, activation="softmax", name="head", dtype="float32")(features)
    new = keras.Model(model.inputs, outputs, name=f"{source_model.name}_transfer")
    for layer in new.layers:
        frozen = (freeze in ("conv", "conv_dense") and _is_conv_part(layer)) or (
            freeze == "conv_dense" and _is_first_dense_part(layer))
        layer.trainable = not frozen
    return new
