"""Batch prediction as a Prefect flow: the function `tlpipe predict MODEL DIR... --out FILE` runs
(tasks.evaluate.predict.predict_to_parquet), deployed as `predict-folder` (prefect.yaml) on a work pool.

    prefect deployment run tlpipe-predict/predict-folder \\
        -p model=models/cards_phone_v2_035/current/model_int8.tflite -p 'inputs=["incoming/"]' -p out=incoming.parquet

Relative paths are the working directory's, the checkout deployed from on the process pool (and so
stay relative in the Parquet rows), or `root`'s when given. Progress goes to the run's log as lines
about every 30 s, then the closing line; an image that cannot be read is a row with its reason
(`error`) and a warning, not a failed run: the flow returns the summary (images, classified, failed,
images/s, the model's sha256, ...). A missing model, labels that do not fit it, or no image at all
fail the run before any work.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from tasks.evaluate.predict import BATCH_SIZE, predict_to_parquet
from tasks.stages import console


def _under(base: Path | None, path: str) -> Path:
    p = Path(path).expanduser()
    return p if base is None or p.is_absolute() else base / p


@flow(name="tlpipe-predict", log_prints=False)
def predict_folder(model: str, inputs: list[str], out: str, top_k: int = 3, batch_size: int = BATCH_SIZE,
                   threads: int | None = None, root: str | None = None) -> dict:
    """Classify every image under `inputs` (folders, recursively, or files) with the .tflite `model`
    into the Parquet file `out` (one row per image). `threads`: default every core."""
    logger = get_run_logger()
    base = Path(root).expanduser() if root else None  # None: as given, relative to the working directory
    summary = predict_to_parquet(_under(base, model), [_under(base, i) for i in inputs], _under(base, out),
                                 top_k=top_k, batch_size=batch_size, threads=threads, progress="lines",
                                 emit=logger.info, setup=console.native_quiet)
    if summary["failed"]:
        logger.warning("%d of %d images could not be classified: their rows in %s give the reason in `error`",
                       summary["failed"], summary["images"], summary["out"])
    return summary
