"""Tiny photo datasets written with PIL: class folders of solid-colour images, plus the odd files
real photo folders contain (empty, truncated, CMYK, 16-bit, EXIF-rotated, ...)."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210), "gray": (128, 128, 128)}


def pattern(color, size=(32, 32), seed: int = 0) -> Image.Image:
    """A colour field with a little deterministic noise (so JPEG bytes differ between images)."""
    rng = np.random.default_rng(seed)
    a = np.empty((size[1], size[0], 3), np.int16)
    a[:] = color
    a += rng.integers(-6, 7, a.shape, dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def class_tree(root: Path, counts: dict[str, int], size: int = 32, prefix: str = "") -> list[Path]:
    """root/<prefix><class>/<i>.jpg, `counts[class]` baseline RGB JPEGs of size x size each. Images in
    valid/ and test/ get other seeds than train/: no image is a byte-identical copy of another."""
    out = []
    offset = {"valid": 50, "validation": 50, "test": 75}.get(prefix, 0)
    for k, (name, n) in enumerate(sorted(counts.items())):
        color = COLORS.get(name, ((60 * k) % 256, (110 * k + 50) % 256, (170 * k + 90) % 256))
        for i in range(n):
            image = pattern(color, (size, size), seed=100 * k + i + offset)
            out.append(write(root / prefix / name / f"{i:03d}.jpg", jpeg(image)))
    return out


def zip_tree(root: Path, zip_path: Path, wrapper: str = "") -> Path:
    """Zip every file under `root` (names prefixed by `wrapper/` when given), deterministically."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                info = zipfile.ZipInfo(f"{wrapper}/{p.relative_to(root).as_posix()}".lstrip("/"), (2020, 1, 1, 0, 0, 0))
                zf.writestr(info, p.read_bytes())
    return zip_path


def tar_tree(root: Path, tar_path: Path) -> Path:
    with tarfile.open(tar_path, "w:gz") as tf:
        for p in sorted(root.rglob("*")):
            tf.add(p, arcname=p.relative_to(root).as_posix(), recursive=False)
    return tar_path


def write_params(root: Path, fetch: dict, prepare: dict, *, workers: int = 1, mirror: str = "",
                 datasets: dict | None = None) -> Path:
    """params.yaml for photo datasets; `datasets` (key -> source module) defaults to each fetch key's
    own module where there is one (cards, banknotes), else the generic `folder`."""
    root.mkdir(parents=True, exist_ok=True)
    sources = Path(__file__).resolve().parents[1] / "tasks" / "sources"
    datasets = {k: k if (sources / f"{k}.py").exists() else "folder" for k in fetch} if datasets is None else datasets
    params = {"mirror": mirror, "runtime": {"workers": workers}, "datasets": datasets,
              "download": {"retries": 1, "backoff_s": 0.01, "timeout_s": 10},
              "fetch": fetch, "prepare": prepare}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root / "params.yaml"


def small_prepare(**overrides) -> dict:
    p = {"image_size": 32, "validation_percentage": 20, "testing_percentage": 20, "min_images_per_class": 2,
         "max_pixels": 10_000, "shard_mb": 1, "min_shards": 1, "jpeg_quality": 95}
    p.update(overrides)
    return p


SHAPES = {"red": "ellipse", "green": "rectangle", "blue": "polygon"}


def shape_image(name: str, seed: int, size: int = 64) -> Image.Image:
    """A photo-like fixture image: a class's shape and colour (red ellipses, green rectangles, blue triangles)
    at a random place and size, on a random two-tone background with noise, so that no two images look
    alike but a class's images share what an ImageNet backbone sees."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    bg = rng.integers(60, 200, 3)
    a = np.empty((size, size, 3), np.int16)
    a[:] = bg
    a[: rng.integers(size // 4, 3 * size // 4)] = rng.integers(60, 200, 3)
    a += rng.integers(-12, 13, a.shape, dtype=np.int16)
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    colour = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 40, 220)}[name]
    w = int(rng.integers(size // 3, size * 3 // 4))
    x0, y0 = (int(v) for v in rng.integers(0, size - w, 2))
    box = (x0, y0, x0 + w, y0 + w)
    if SHAPES[name] == "ellipse":
        draw.ellipse(box, fill=colour)
    elif SHAPES[name] == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x0, y0 + w), (x0 + w // 2, y0), (x0 + w, y0 + w)], fill=colour)
    return im


def shape_tree(root: Path, counts: dict[str, int], prefix: str = "", size: int = 64, seed: int = 0) -> list[Path]:
    """root/<prefix>/<class>/<i>.jpg of shape_image()s (each split prefix its own seeds)."""
    out = []
    for k, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            offset = 100_000 * {"": 0, "train": 1, "valid": 2, "validation": 2, "test": 3}.get(prefix, 4)
            image = shape_image(name, seed + 1000 * k + i + offset, size)
            out.append(write(root / prefix / name / f"{i:03d}.jpg", jpeg(image)))
    return out
