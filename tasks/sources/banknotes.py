"""Mexican banknotes: photos in class folders named <denomination><series>_<Anv|Rev>, e.g. 500D1_Anv.

The study never published its photos, so there is no default source: `fetch.banknotes.source`
must name a folder, a zip/tar archive, an http(s) URL of one, or kaggle:<owner>/<slug>.
Each class parses into {denomination, series, side}; the manifest carries them as
`label_attributes`, from which evaluation reports per-denomination accuracy.
"""
from __future__ import annotations

import re
from pathlib import Path

KIND = "image_folder"
UPSTREAM = None
MIRROR_PATH = None
INDEX_CSV = None
NO_DEFAULT = ("the banknote study never published its photos, so there is no default source; set "
              "`fetch.banknotes.source` in params.yaml to a folder of class folders (500D1_Anv/, 100FC_Rev/, ...), "
              "a zip/tar archive or an http(s) URL of one, or kaggle:<owner>/<dataset>")

# The 20 classes of the study (front = anverso, back = reverso).
STUDY_CLASSES = ("1000F_Anv 100FC_Anv 100FC_Rev 100F_Anv 100F_Rev 200FConm_Anv 200FConm_Rev 200F_Anv 200F_Rev "
                 "20F_Anv 20F_Rev 500D1_Anv 500D1_Rev 500F_Anv 500F_Rev 500G_Anv 50F1_Anv 50F1_Rev 50F_Anv "
                 "50F_Rev").split()
NAME = re.compile(r"^(?P<denomination>[1-9][0-9]*)(?P<series>[A-Za-z][A-Za-z0-9]*)_(?P<side>Anv|Rev)$",
                  re.IGNORECASE)
SIDES = {"anv": "front", "rev": "back"}


def parse_class(name: str) -> dict:
    """'500D1_Anv' -> {denomination: '500', series: 'D1', side: 'front'}; ValueError if not that shape."""
    m = NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a banknote class name: expected <denomination><series>_<Anv|Rev>, "
                         "e.g. 500D1_Anv, 100FC_Rev, 200FConm_Anv, 1000F_Anv")
    return {"denomination": m["denomination"], "series": m["series"], "side": SIDES[m["side"].lower()]}


def label_attributes(class_names, root) -> dict:
    attributes, bad = {}, []
    for name in class_names:
        try:
            attributes[name] = parse_class(name)
        except ValueError as e:
            bad.append(f"{Path(root) / name}: {e}")
    if bad:
        raise ValueError("banknotes: class folders with names that do not parse:\n  " + "\n  ".join(bad))
    return attributes


def notes(class_names) -> list[str]:
    """How the class set compares with the study's 20 classes."""
    extra = sorted(set(class_names) - set(STUDY_CLASSES))
    missing = sorted(set(STUDY_CLASSES) - set(class_names))
    out = []
    if extra:
        out.append(f"classes not in the study's 20: {extra}")
    if missing:
        out.append(f"study classes absent here: {missing}")
    return out
