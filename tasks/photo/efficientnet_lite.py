"""EfficientNet-Lite0 in Keras, and its ImageNet weights from a PyTorch state dict.

Lite0 is MediaPipe Model Maker's default image-classifier backbone: EfficientNet-B0 without
squeeze-excitation, with ReLU6, the stem (32) and head (1280) not scaled; made for int8 phones.
keras.applications has no Lite variant, so the graph is written here (one screen), with layer names
that follow the state dict's (`block{i}_expand_conv` <- `_blocks.{i}._expand_conv`), so the weight map
is a name map. Input: float (x - 127) / 128, the Lite models' own normalisation (`PREPROCESS`).

Weights: `load_state(model, state)` takes the arrays `tasks/fetch/torch_state.py` read from the
registry package's `.pth` (data/weights/<key>/*.npz): conv kernels OIHW -> HWIO, depthwise
(C, 1, H, W) -> (H, W, C, 1), BN (gamma, beta, running mean, running var), the classifier (1000, 1280)
-> (1280, 1000). Every array must be used and fit, or it is an error naming it.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

PREPROCESS = (1 / 128.0, -127.0 / 128.0)  # scale, offset: (x - 127) / 128
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
# (expand ratio, kernel, stride, output channels, repeats) per stage: B0's, depth and width 1.0
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, HEAD = 32, 1280


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True, depthwise: bool = False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = False, classes: int = 1000) -> keras.Model:
    """Lite0 on a float input already normalised by PREPROCESS; without the top, the last feature map
    (7 x 7 x 1280 at 224); with it, ImageNet logits."""
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = _conv_bn(inputs, STEM, 3, 2, "stem")
    channels, block = STEM, 0
    for expand, kernel, stride, out, repeats in STAGES:
        for r in range(repeats):
            name, shortcut = f"block{block}", x
            h = x
            if expand != 1:
                h = _conv_bn(h, channels * expand, 1, 1, f"{name}_expand")
            h = _conv_bn(h, 0, kernel, stride if r == 0 else 1, f"{name}_dw", depthwise=True)
            h = _conv_bn(h, out, 1, 1, f"{name}_project", act=False)
            if (stride if r == 0 else 1) == 1 and channels == out:
                h = layers.Add(name=f"{name}_add")([shortcut, h])
            x, channels, block = h, out, block + 1
    x = _conv_bn(x, HEAD, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def state_map(model: keras.Model) -> dict[str, tuple[str, ...]]:
    """Keras layer name -> the state dict names its weights come from, in the layer's weight order."""
    bn = ("weight", "bias", "running_mean", "running_var")
    out = {}

    def conv_bn(keras_name: str, conv: str, norm: str):
        out[f"{keras_name}_conv"] = (f"{conv}.weight",)
        out[f"{keras_name}_bn"] = tuple(f"{norm}.{k}" for k in bn)

    conv_bn("stem", "_conv_stem", "_bn0")
    blocks = sum(s[-1] for s in STAGES)
    for i in range(blocks):
        p = f"_blocks.{i}"
        if any(layer.name == f"block{i}_expand_conv" for layer in model.layers):
            conv_bn(f"block{i}_expand", f"{p}._expand_conv", f"{p}._bn0")
        conv_bn(f"block{i}_dw", f"{p}._depthwise_conv", f"{p}._bn1")
        conv_bn(f"block{i}_project", f"{p}._project_conv", f"{p}._bn2")
    conv_bn("top", "_conv_head", "_bn1")
    if any(layer.name == "predictions" for layer in model.layers):
        out["predictions"] = ("_fc.weight", "_fc.bias")
    return out


def _to_keras(layer, array: np.ndarray) -> np.ndarray:
    if array.ndim == 4 and isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, H, W) -> (H, W, C, 1)
        return array.transpose(2, 3, 0, 1)
    if array.ndim == 4:  # OIHW -> HWIO
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # Linear (out, in) -> Dense (in, out)
        return array.T
    return array


def load_state(model: keras.Model, state: dict[str, np.ndarray], source: str = "state dict") -> None:
    """Set every weight of `model` from `state`; a missing, unused or misfitting array is an error."""
    used = set()
    for layer_name, names in state_map(model).items():
        layer = model.get_layer(layer_name)
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(f"{source}: no {missing[0]} for layer {layer_name} (is it an EfficientNet-Lite0?)")
        values = [_to_keras(layer, np.asarray(state[n], np.float32)) for n in names]
        for n, v, w in zip(names, values, layer.weights):
            if tuple(v.shape) != tuple(w.shape):
                raise ValueError(f"{source}: {n} has shape {v.shape}, layer {layer_name} needs {tuple(w.shape)}")
        layer.set_weights(values)
        used.update(names)
    extra = sorted(n for n in state if n not in used and not n.endswith("num_batches_tracked")
                   and not (n.startswith("_fc.") and "predictions" not in {layer.name for layer in model.layers}))
    if extra:
        raise ValueError(f"{source}: {len(extra)} arrays fit no layer of {model.name}, e.g. {extra[:3]}")
