"""TFLite Metadata inside a .tflite: what MediaPipe Tasks, the TFLite Task Library and Android
Studio read (model name, description, version, author, license, input normalisation, output labels).

Written by hand from the published schema (`metadata_schema.fbs`, file identifier "M001", the one
MediaPipe and tflite-support ship) with the `flatbuffers` runtime that TensorFlow already depends
on, because the maintained writers do not install with our pins: `tflite-support` needs
protobuf<4, and mediapipe's `metadata_writers` import `mediapipe.tasks.cc.metadata.python
._pywrap_metadata_version`, which its wheels do not ship. Only schema-1.0.0 fields are written, so
`min_parser_version` is "1.0.0".

The layout is the one tflite-support's `MetadataPopulator` produces:
- the ModelMetadata flatbuffer is one more `buffers` entry of the TFLite model, named by a
  `metadata` entry `TFLITE_METADATA` (the model is unpacked and repacked with the object API of
  `ai_edge_litert.schema_py_generated`, the TFLite schema LiteRT ships);
- associated files (labels.txt, ...) are a zip archive (stored, not deflated) appended to the
  flatbuffer; interpreters ignore the trailing bytes, readers open the file as a zip.

Field slots below are the fields' positions in the schema's tables (a union field takes two
slots: its type, then its value).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from tasks.core.io import atomic_path, room_for

METADATA_NAME = "TFLITE_METADATA"
MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"

# enums of metadata_schema.fbs
FILE_DESCRIPTIONS, FILE_TENSOR_AXIS_LABELS = 1, 2
COLOR_RGB, COLOR_GRAYSCALE = 1, 2
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2          # ContentProperties union members
PROCESS_NORMALIZATION = 1                      # ProcessUnitOptions union member
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)              # fixed: the same model gives the same bytes


class _Writer:
    """Tables of metadata_schema.fbs, built bottom-up (children before parents, as flatbuffers wants)."""

    def __init__(self):
        import flatbuffers

        self.b = flatbuffers.Builder(1024)

    def _table(self, num_slots: int, fields: list) -> int:
        """fields: (slot, kind, value) with kind 'off' (an offset built before), 'u8', 'u32'."""
        b = self.b
        b.StartObject(num_slots)
        for slot, kind, value in fields:
            if value is None:
                continue
            {"off": b.PrependUOffsetTRelativeSlot, "u8": b.PrependUint8Slot,
             "u32": b.PrependUint32Slot}[kind](slot, value, 0)
        return b.EndObject()

    def string(self, text):
        return None if text is None else self.b.CreateString(str(text))

    def offsets(self, items: list) -> int | None:
        if not items:
            return None
        self.b.StartVector(4, len(items), 4)
        for off in reversed(items):
            self.b.PrependUOffsetTRelative(off)
        return self.b.EndVector()

    def floats(self, values) -> int:
        return self.b.CreateNumpyVector(np.asarray(values, dtype=np.float32))

    def associated_file(self, name: str, description: str, file_type: int) -> int:
        # AssociatedFile: name 0, description 1, type 2, locale 3, version 4
        name_off, desc_off = self.string(name), self.string(description)
        return self._table(5, [(0, "off", name_off), (1, "off", desc_off), (2, "u8", file_type)])

    def stats(self, lo, hi) -> int:
        # Stats: max 0, min 1
        hi_off, lo_off = self.floats(hi), self.floats(lo)
        return self._table(2, [(0, "off", hi_off), (1, "off", lo_off)])

    def content(self, kind: int, props: int) -> int:
        # Content: content_properties_type 0, content_properties 1, range 2
        return self._table(3, [(0, "u8", kind), (1, "off", props)])

    def image_properties(self, color_space: int, width: int, height: int) -> int:
        # ImageSize: width 0, height 1; ImageProperties: color_space 0, default_size 1
        size = self._table(2, [(0, "u32", width), (1, "u32", height)])
        return self._table(2, [(0, "u8", color_space), (1, "off", size)])

    def feature_properties(self) -> int:
        return self._table(0, [])

    def normalization(self, mean, std) -> int:
        # NormalizationOptions: mean 0, std 1; ProcessUnit: options_type 0, options 1
        mean_off, std_off = self.floats(mean), self.floats(std)
        options = self._table(2, [(0, "off", mean_off), (1, "off", std_off)])
        return self._table(2, [(0, "u8", PROCESS_NORMALIZATION), (1, "off", options)])

    def tensor(self, name, description, content, process_units=(), stats=None, files=()) -> int:
        # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4,
        # stats 5, associated_files 6
        name_off, desc_off = self.string(name), self.string(description)
        units, file_vec = self.offsets(list(process_units)), self.offsets(list(files))
        return self._table(7, [(0, "off", name_off), (1, "off", desc_off), (3, "off", content),
                               (4, "off", units), (5, "off", stats), (6, "off", file_vec)])

    def subgraph(self, inputs: list, outputs: list) -> int:
        # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3, ...
        ins, outs = self.offsets(inputs), self.offsets(outputs)
        return self._table(10, [(2, "off", ins), (3, "off", outs)])

    def model(self, info: dict, subgraph: int, files: list) -> bytes:
        # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
        # associated_files 6, min_parser_version 7
        strings = {k: self.string(info.get(k)) for k in ("name", "description", "version", "author", "license")}
        subgraphs, file_vec = self.offsets([subgraph]), self.offsets(files)
        parser = self.string(MIN_PARSER_VERSION)
        root = self._table(8, [(0, "off", strings["name"]), (1, "off", strings["description"]),
                               (2, "off", strings["version"]), (3, "off", subgraphs),
                               (4, "off", strings["author"]), (5, "off", strings["license"]),
                               (6, "off", file_vec), (7, "off", parser)])
        self.b.Finish(root, METADATA_IDENTIFIER)
        return bytes(self.b.Output())


def image_classifier_metadata(info: dict, *, height: int, width: int, channels: int, num_classes: int,
                              labels_file: str = "labels.txt", extra_files: dict | None = None) -> bytes:
    """The ModelMetadata flatbuffer of an image classifier that takes raw 0-255 pixels.

    `info`: name, description, version, author, license. `extra_files`: name -> description of
    further associated files (e.g. label_attributes.json), listed at model level as DESCRIPTIONS.
    The input's normalisation is the identity (mean 0, std 1 per channel): the model rescales
    inside, so a float32 client feeds pixel values as they are, a uint8 client the bytes.
    """
    w = _Writer()
    image = w.content(CONTENT_IMAGE, w.image_properties(COLOR_GRAYSCALE if channels == 1 else COLOR_RGB,
                                                        width, height))
    norm = w.normalization([0.0] * channels, [1.0] * channels)
    pixel_stats = w.stats([0.0] * channels, [255.0] * channels)
    inp = w.tensor("image", f"Input image, {width}x{height}, {'greyscale' if channels == 1 else 'RGB'}, "
                   "raw pixel values 0-255 (the model rescales internally).", image, [norm], pixel_stats)
    labels = w.associated_file(labels_file, "Labels for categories that the model can recognize.",
                               FILE_TENSOR_AXIS_LABELS)
    out = w.tensor("probability", f"Probabilities of the {num_classes} labels respectively.",
                   w.content(CONTENT_FEATURE, w.feature_properties()), (), w.stats([0.0], [1.0]), [labels])
    sub = w.subgraph([inp], [out])
    files = [w.associated_file(name, desc, FILE_DESCRIPTIONS) for name, desc in (extra_files or {}).items()]
    return w.model(info, sub, files)


def populate(model: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """`model` with `metadata` as its TFLITE_METADATA buffer (replacing one already there) and
    `files` (name -> bytes) packed as the trailing zip. Any zip already trailing `model` is dropped."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    tree.metadata = tree.metadata or []
    tree.buffers = tree.buffers or []
    for entry in tree.metadata:
        if _name(entry.name) == METADATA_NAME:
            tree.buffers[entry.buffer] = buffer
            break
    else:
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
        tree.metadata.append(entry)
    b = flatbuffers.Builder(len(model) + len(metadata) + 1024)
    b.Finish(tree.Pack(b), MODEL_IDENTIFIER)
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    if files:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(files):
                zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), files[name])
    return out.getvalue()


def _name(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value or "")


def metadata_bytes(model: bytes) -> bytes | None:
    """The TFLITE_METADATA flatbuffer inside a .tflite's bytes, or None."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            buf = root.Buffers(entry.Buffer())
            if buf.Offset() > 1:  # large-model layout: the data lies outside the flatbuffer
                return bytes(model[buf.Offset():buf.Offset() + buf.Size()])
            return buf.DataAsNumpy().tobytes() if buf.DataLength() else None
    return None


class _Reader:
    """Reads the tables written above (field slots as in the schema)."""

    def __init__(self, buf: bytes, pos: int):
        from flatbuffers.table import Table

        self.t = Table(bytearray(buf), pos)

    def _off(self, slot):
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot):
        o = self._off(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else None

    def u8(self, slot):
        from flatbuffers import number_types as N

        o = self._off(slot)
        return self.t.Get(N.Uint8Flags, o + self.t.Pos) if o else 0

    def table(self, slot):
        o = self._off(slot)
        return _Reader(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, slot) -> list:
        o = self._off(slot)
        if not o:
            return []
        start = self.t.Vector(o)
        return [_Reader(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(self.t.VectorLen(o))]

    def floats(self, slot) -> list:
        from flatbuffers import number_types as N

        o = self._off(slot)
        return [float(x) for x in self.t.GetVectorAsNumpy(N.Float32Flags, o)] if o else []


def read_metadata(model: bytes) -> dict | None:
    """The metadata of a .tflite's bytes as a dict (the fields this module writes), or None."""
    buf = metadata_bytes(model)
    if buf is None:
        return None
    from flatbuffers import encode, packer

    if buf[4:8] != METADATA_IDENTIFIER:
        raise ValueError(f"TFLITE_METADATA buffer has identifier {buf[4:8]!r}, expected {METADATA_IDENTIFIER!r}")
    root = _Reader(buf, encode.Get(packer.uoffset, bytearray(buf), 0))

    def files(r, slot):
        return [{"name": f.string(0), "description": f.string(1), "type": f.u8(2)} for f in r.tables(slot)]

    def tensor(r):
        units = [{"type": u.u8(0), "mean": u.table(1).floats(0), "std": u.table(1).floats(1)}
                 for u in r.tables(4) if u.u8(0) == PROCESS_NORMALIZATION]
        stats = r.table(5)
        content = r.table(3)
        return {"name": r.string(0), "description": r.string(1),
                "content_type": content.u8(0) if content else 0,
                "normalization": units, "max": stats.floats(0) if stats else [],
                "min": stats.floats(1) if stats else [], "associated_files": files(r, 6)}

    subgraphs = [{"inputs": [tensor(t) for t in s.tables(2)], "outputs": [tensor(t) for t in s.tables(3)]}
                 for s in root.tables(3)]
    return {**{k: root.string(i) for i, k in enumerate(("name", "description", "version"))},
            "author": root.string(4), "license": root.string(5), "associated_files": files(root, 6),
            "min_parser_version": root.string(7), "subgraphs": subgraphs}


def associated_files(model: bytes) -> dict[str, bytes]:
    """The files in the zip that trails a .tflite's bytes (empty when there is none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except zipfile.BadZipFile:
        return {}


def labels_from_model(path: Path) -> list[str] | None:
    """The output labels a .tflite carries (its TENSOR_AXIS_LABELS file), or None without metadata."""
    model = Path(path).read_bytes()
    meta = read_metadata(model)
    if not meta:
        return None
    names = [f["name"] for s in meta["subgraphs"] for t in s["outputs"] for f in t["associated_files"]
             if f["type"] == FILE_TENSOR_AXIS_LABELS]
    packed = associated_files(model)
    for name in names:
        if name in packed:
            return packed[name].decode("utf-8").splitlines()
    return None


def add_classifier_metadata(tflite_path: Path, info: dict, label_names: list[str], *,
                            label_attributes: dict | None = None, output: Path | None = None) -> dict:
    """Rewrite `tflite_path` (atomically) with image-classifier metadata and labels.txt (plus
    label_attributes.json when given); returns {"bytes_without", "bytes_with"}. `output`: the file
    `tflite_path` stands in for (a temp name), as errors name it."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(tflite_path)
    model = path.read_bytes()
    interp = Interpreter(model_content=model)
    _, height, width, channels = (int(d) for d in interp.get_input_details()[0]["shape"])
    num_classes = int(interp.get_output_details()[0]["shape"][-1])
    if num_classes != len(label_names):
        raise ValueError(f"{output or path}: the model has {num_classes} outputs but there are "
                         f"{len(label_names)} labels")
    files = {"labels.txt": "".join(f"{n}\n" for n in label_names).encode("utf-8")}
    extra = {}
    if label_attributes:
        files["label_attributes.json"] = json.dumps(label_attributes, indent=1, sort_keys=True).encode("utf-8")
        extra["label_attributes.json"] = "Attributes of each label (class name -> {attribute: value})."
    meta = image_classifier_metadata(info, height=height, width=width, channels=channels,
                                     num_classes=num_classes, extra_files=extra)
    out = populate(model, meta, files)
    with atomic_path(path) as tmp, room_for(output or path):
        tmp.write_bytes(out)
    return {"bytes_without": len(model), "bytes_with": len(out)}
