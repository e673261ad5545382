"""Project paths and params.yaml: the one place every knob is read from."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

# libyaml's safe loader when PyYAML has it (its wheels do): the same documents, about 10x faster to read
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MIRROR_ENV = "TLPIPE_MIRROR"
WORKERS_ENV = "TLPIPE_WORKERS"


@dataclass(frozen=True)
class Project:
    """Where a pipeline run reads params from and writes data to."""

    root: Path

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    def raw_dir(self, key: str) -> Path:
        return self.root / "data" / "raw" / key

    def processed_dir(self, key: str) -> Path:
        return self.root / "data" / "processed" / key

    def weights_dir(self, key: str) -> Path:
        return self.root / "data" / "weights" / key

    def check_dir(self, key: str) -> Path:
        """reports/data/<key>/: check@<key>'s page, table and verdict (summary.json)."""
        return self.root / "reports" / "data" / key

    def params(self) -> dict:
        """params.yaml, validated (tasks/stages/validate.py): an unknown or missing key fails here, before any work."""
        from tasks.stages.validate import validate

        with open(self.params_file, encoding="utf-8") as f:
            return validate(yaml.load(f, Loader=SAFE_LOADER) or {})


def find_project(start: Path | None = None) -> Project:
    """The nearest directory at or above `start` that holds a params.yaml."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "params.yaml").is_file():
            return Project(d)
    raise FileNotFoundError(f"no params.yaml found in {here} or any parent directory")


def mirror(params: dict) -> str | None:
    """The mirror that replaces every upstream base URL: $TLPIPE_MIRROR, else params `mirror`.

    A mirror is a URL (http, https, file) or a local directory laid out like upstream.
    """
    value = os.environ.get(MIRROR_ENV) or params.get("mirror") or None
    return str(value) if value else None


def workers(params: dict) -> int:
    """Worker processes for data work: $TLPIPE_WORKERS, params `runtime.workers`, 0 = all cores."""
    value = int(os.environ.get(WORKERS_ENV) or (params.get("runtime") or {}).get("workers") or 0)
    return value if value > 0 else (os.cpu_count() or 1)
