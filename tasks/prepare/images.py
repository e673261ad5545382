"""One photo in, checked JPEG bytes of an S x S RGB image out (or a reason it was skipped).

Runs in worker processes that import only PIL and numpy. Checks, in order: empty file; a format
we accept (JPEG, PNG, BMP, GIF, WebP; the first frame of an animation); the pixel count from the
header BEFORE decoding (decompression-bomb guard); a full decode (truncated or corrupt data fails
here). Then EXIF orientation is applied and any mode (CMYK, grayscale, palette, 16-bit, alpha
composited on white) becomes 8-bit RGB.

Output: a file that already is a baseline RGB JPEG of exactly S x S with no EXIF rotation to apply
is stored byte for byte (no second lossy encode). Anything else is resized to S x S — `squash`
(plain resize, the default: the cards data is already square, and a banknote keeps its edges) or
`crop` (aspect-preserving center crop) — and encoded as a baseline JPEG at `quality`.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tasks.core.hashing import sha256_file

ACCEPTED = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # JPEG's opener also takes phones' multi-picture (MPO) files
ORIENTATION = 0x0112
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
RESIZE = ("squash", "crop")


class BadImage(ValueError):
    """A file that cannot become a training image; str() is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Options:
    size: int
    max_pixels: int
    quality: int = 95
    resize: str = "squash"


def convert(path, opts: Options) -> tuple[bytes, dict]:
    """(JPEG bytes, info) for one file; BadImage with the reason when it is unusable."""
    path = Path(path)
    if os.path.getsize(path) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            with Image.open(path, formats=ACCEPTED) as im:
                data, info = _convert_open(im, path, opts)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb refused by PIL: {e}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (or not a JPEG, PNG, BMP, GIF or WebP)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
        raise BadImage(f"corrupt or truncated image: {e}") from None
    except MemoryError:
        raise BadImage("image needs more memory than is available to decode") from None
    # the source file's own bytes: exact duplicates (within and across classes) are found on this
    return data, {**info, "sha256": sha256_file(path)}


def _convert_open(im: Image.Image, path: Path, opts: Options) -> tuple[bytes, dict]:
    width, height = im.size
    if width * height > opts.max_pixels:
        raise BadImage(f"too many pixels: {width}x{height} = {width * height:,} > max_pixels "
                       f"{opts.max_pixels:,} (decompression-bomb guard; nothing was decoded)")
    fmt, mode = im.format, im.mode
    orientation = _orientation(im)
    info = {"format": fmt, "mode": mode, "size": [width, height], "rotated": orientation not in (None, 1)}
    passthrough = (fmt == "JPEG" and mode == "RGB" and im.size == (opts.size, opts.size)
                   and not (im.info.get("progressive") or im.info.get("progression"))
                   and not info["rotated"])
    if fmt in ("JPEG", "MPO") and not passthrough and min(width, height) >= 2 * opts.size:
        im.draft(None, (opts.size, opts.size))  # decode at 1/2..1/8 scale: far faster on big photos
    im.load()  # full decode: truncated or corrupt data fails here
    if passthrough:
        data = path.read_bytes()
        if data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
            return data, {**info, "passthrough": True}
    if info["rotated"]:
        im = ImageOps.exif_transpose(im)
    out = _resize(to_rgb(im), opts)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(opts.quality), subsampling=2, optimize=False, progressive=False)
    return buf.getvalue(), {**info, "passthrough": False}


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(ORIENTATION)
    except Exception:  # a broken EXIF block is not a broken image: ignore the orientation
        return None


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit scaled (not clipped), alpha and transparency composited on white."""
    if im.mode in SIXTEEN_BIT:
        levels = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
        im = Image.fromarray(np.clip(np.rint(levels), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), "L")
    if im.mode in ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _resize(im: Image.Image, opts: Options) -> Image.Image:
    size = (opts.size, opts.size)
    if im.size == size:
        return im
    if opts.resize == "crop":
        return ImageOps.fit(im, size, Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return im.resize(size, Image.Resampling.LANCZOS)


def convert_chunk(paths: list[str], opts: Options) -> list[tuple[bytes | None, str | None, dict | None]]:
    """Worker entry point: (bytes, None, info) or (None, reason, None) per path, in order."""
    out = []
    for p in paths:
        try:
            data, info = convert(p, opts)
            out.append((data, None, info))
        except BadImage as e:
            out.append((None, str(e), None))
        except OSError as e:  # unreadable file (permissions, I/O error)
            out.append((None, f"cannot read file: {e}", None))
    return out
