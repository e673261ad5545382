"""Phone-sized bases by name (MobileNets, EfficientNet-Lite0, a compact CNN for random init), their weights from a local file only, and
the uint8 -> features front.

Keras would download ImageNet weights for `weights="imagenet"`; we never let it: a base gets either a
local weights file (legacy Keras-applications `.h5` or Keras 3 `.weights.h5`, loaded through
`model.load_weights`; for EfficientNet-Lite0 also the `.npz` state dict fetch_weights@ converts from
the registry package's PyTorch file) or None (random init, re-drawn from fixed seeds).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import keras
from keras import layers

from tasks.core.hashing import sha256_file
from tasks.core.seeds import Seeds
from tasks.photo import compact, efficientnet_lite

BASES = {
    "mobilenet": lambda **kw: keras.applications.MobileNet(**kw),
    "mobilenet_v2": lambda **kw: keras.applications.MobileNetV2(**kw),
    "mobilenet_v3_small": lambda **kw: keras.applications.MobileNetV3Small(include_preprocessing=False, **kw),
    "mobilenet_v3_large": lambda **kw: keras.applications.MobileNetV3Large(include_preprocessing=False, **kw),
    "efficientnet_lite0": lambda input_shape, alpha, **kw: efficientnet_lite.efficientnet_lite0(input_shape),
    "compact_cnn": lambda input_shape, alpha, **kw: compact.compact_cnn(input_shape, alpha),  # from scratch only
}
MOBILENET_PREPROCESS = (1 / 127.5, -1.0)  # x / 127.5 - 1
PREPROCESS = {"efficientnet_lite0": efficientnet_lite.PREPROCESS}  # (scale, offset); others: MobileNet's
FIXED_ALPHA = {"efficientnet_lite0"}  # no width multiplier: alpha must be 1.0
WEIGHT_SUFFIXES = (".h5", ".npz")


def weights_file(path: Path | str | None) -> Path | None:
    """The weights file `path` names: the file itself, or the single *.h5 / *.npz file in a directory
    (data/weights/<key>/ holds one beside its fetch.json). None stays None (random init)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected exactly one *.h5 or *.npz weights file, found "
                                    f"{[p.name for p in found] or 'none'}")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (expected a local .h5, .weights.h5 or .npz "
                                f"file; weights are never downloaded)")
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"{path}: not a weights file; expected a legacy Keras .h5, a Keras 3 .weights.h5 or "
                         f"a state dict .npz (fetch_weights@ of a PyTorch file)")
    return path


def sha256(path: Path) -> str:
    return sha256_file(path)


def reseed(model: keras.Model, seed: int) -> None:
    """Re-draw every randomly initialised kernel of `model` from fixed seeds.

    keras.applications builds its layers with unseeded initializers, which draw from the process-wide
    Python RNG that other threads (Prefect's) share; a random-init base would differ run to run.
    """
    seeds = Seeds(seed)
    for layer in model.layers:
        for init_name, var_name in (("kernel_initializer", "kernel"), ("depthwise_initializer", "kernel")):
            init, var = getattr(layer, init_name, None), getattr(layer, var_name, None)
            if init is None or var is None or "seed" not in init.get_config():
                continue
            fixed = init.__class__.from_config({**init.get_config(), "seed": seeds.next_seed()})
            var.assign(fixed(var.shape, var.dtype))
            break


def build_base(name: str, image_size: int, alpha: float = 1.0, weights: Path | str | None = None,
               seed: int = 0) -> keras.Model:
    """Base `name` without its classifier, input (S, S, 3) float as `front` makes it, output the last
    feature map; weights from a local file (or a dir holding one), or random init from `seed`."""
    if name not in BASES:
        raise ValueError(f"unknown base {name!r}; choose one of {sorted(BASES)}")
    if name in FIXED_ALPHA and float(alpha) != 1.0:
        raise ValueError(f"{name} has no width multiplier: alpha must be 1.0, not {alpha}")
    path = weights_file(weights)
    base = BASES[name](input_shape=(int(image_size), int(image_size), 3), alpha=float(alpha),
                       include_top=False, weights=None)
    if path is None:
        reseed(base, seed)
    elif path.suffix == ".npz":
        _load_state_dict(base, name, path)
    else:
        try:
            with warnings.catch_warnings():  # Keras notes the functional graph's own bookkeeping
                warnings.filterwarnings("ignore", message="Skipping nested container at '_operations_by_depth")
                base.load_weights(str(path))
        except Exception as e:  # noqa: BLE001 - say which file did not fit which base
            raise ValueError(f"{path}: does not fit {name}(alpha={alpha}, include_top=False): {e}") from e
    base.name = "base"  # fixed name, whatever the application calls itself
    base.layers[0].name = "base_input"  # not Keras' per-process counter: saved weights files stay byte-stable
    return base


def _load_state_dict(base: keras.Model, name: str, path: Path) -> None:
    """A state dict .npz (fetch_weights@'s conversion of a PyTorch file): only Lite0 has a map for it."""
    import numpy as np

    if name != "efficientnet_lite0":
        raise ValueError(f"{path}: a state dict .npz loads into efficientnet_lite0 only, not {name}")
    with np.load(path, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    efficientnet_lite.load_state(base, state, source=str(path))


def freeze_batchnorm(model: keras.Model) -> None:
    """BN layers frozen: Keras 3 runs a frozen BatchNormalization in inference mode always.

    This, not `base(x, training=False)`, is what keeps them in inference mode during fit: a Keras 3
    functional model passes its own `training` to every nested layer, replacing the one recorded at
    the call. (The approximate V2 1.0 weights have BN folded into the convs: their BN layers must
    only ever apply the neutral statistics they carry.)
    """
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


def set_trainable(base: keras.Model, from_layer: int | None, train_bn: bool = False) -> None:
    """Base layers from index `from_layer` on trainable (negative: the last N layers; None: none),
    the rest frozen; BN layers frozen unless `train_bn`."""
    base.trainable = True
    n = len(base.layers)
    start = n if from_layer is None else (int(from_layer) % n if int(from_layer) < 0 else int(from_layer))
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start
    if not train_bn:
        freeze_batchnorm(base)


def front(image_shape, image_size: int, name: str = "image", base: str = "mobilenet_v2"):
    """(uint8 input, its float tensor at image_size normalised as `base` expects: MobileNet's
    x/127.5 - 1, Lite0's (x - 127)/128), inside the model so TFLite takes raw pixels; resized first
    when the dataset is stored at another size."""
    inputs = keras.Input(shape=tuple(image_shape), dtype="uint8", name=name)
    x = inputs
    if tuple(image_shape[:2]) != (int(image_size), int(image_size)):
        x = layers.Resizing(int(image_size), int(image_size), name="resize")(x)
    scale, offset = PREPROCESS.get(base, MOBILENET_PREPROCESS)
    return inputs, layers.Rescaling(scale, offset=offset, name="preprocess")(x)


def features_model(base: keras.Model, image_shape, image_size: int, pool: bool = True,
                   name: str = "mobilenet_v2") -> keras.Model:
    """uint8 image -> pooled base features, or the base's feature map (the bottleneck of a features cache);
    `name`: the base's kind (its input normalisation)."""
    inputs, x = front(image_shape, image_size, base=name)
    x = base(x, training=False)
    outputs = layers.GlobalAveragePooling2D(name="pool")(x) if pool else x
    return keras.Model(inputs, outputs, name="features")
