"""The `tlpipe` command. DVC stages call these subcommands; they import no Prefect.

    tlpipe fetch KEY          download/mirror a dataset into data/raw/KEY (photo datasets: a folder,
                              zip/tar, URL or kaggle:<owner>/<dataset>, params.yaml fetch.KEY.source)
    tlpipe prepare KEY        build data/processed/KEY (shards + manifest)
    tlpipe check KEY          duplicates, leaks, label issues, outliers -> reports/data/KEY (exit 1 on a failed verdict)
    tlpipe fetch-weights KEY  pretrained weights (params.yaml `weights.KEY`) into data/weights/KEY
    tlpipe features KEY       bottleneck cache (params.yaml `features.KEY`) into data/features/KEY
    tlpipe teach KEY          a teacher's targets for distillation (params.yaml `teach.KEY`) into data/teach/KEY
    tlpipe train MODEL        train a model recipe from params.yaml into models/MODEL
    tlpipe evaluate MODEL     test-split metrics, confusion matrix, gate -> reports/MODEL
    tlpipe export MODEL       TFLite in each of export.formats, parity with Keras -> models/MODEL/tflite
    tlpipe report [MODEL]     a model's page reports/MODEL/README.md; without MODEL the index reports/README.md
    tlpipe predict MODEL.tflite IMAGE|DIR... [--out predictions.parquet]   top-k labels with scores
    tlpipe predict MODEL.tflite DIR... --out FILE.parquet   every image under the folders, batched on
                              every core, one Parquet row each (-q: only the start and end lines)
    tlpipe pipeline [KEY...]  the same DAG as a Prefect flow (ephemeral mode when no server is set)
    tlpipe serve [--cron ..]  a scheduled Prefect deployment of the pipeline flow (needs a Prefect server)
    tlpipe deploy [ARGS..]    `prefect --no-prompt deploy ARGS` (default --all) from prefect.yaml,
                              with a fix for our pins (flows/compat.py)
    tlpipe check-remote [NAME]  can this checkout reach its DVC remote (default: core.remote), and if not,
                              which part is wrong: access key, secret, permission, bucket, endpoint
    tlpipe status [--json]    each model and dataset whose dvc.lock records other code (a tasks/ package),
                              params (a key) or command than the tree holds, or that never ran; no data
                              needed, no lock taken, exit 0 (informational)

    -v/--verbose              also show TensorFlow's start-up log, Keras' export printout and other
                              libraries' INFO logs (httpx, DVC, ...); quiet by default (tasks/stages/console.py)
    -q/--quiet                only a stage's start and end lines (and warnings, errors): no progress, no
                              epoch lines (TLPIPE_QUIET=1, which the stages a `tlpipe pipeline` runs inherit)
    --json                    a stage's full result as JSON after its closing line

A stage prints one line when it starts and one when it ends (what it made, how long); training prints
one line per epoch. A long phase (features, teach, an export's calibration and parity passes, the batches
of an epoch, check, prepare on a big folder) shows a live bar on a terminal and, in a log, a line about
every 30 s (TLPIPE_PROGRESS_INTERVAL seconds) and one when it ends (tasks/core/progress.py).

An error prints one line (what failed, the file, what to do) and exits 1; `--traceback` (anywhere
on the line) or TLPIPE_TRACEBACK=1 shows the stack instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from tasks.core import progress
from tasks.stages import console
from tasks.stages.project import find_project


EXPECTED = (OSError, ValueError, KeyError, RuntimeError)  # bad input, failed download, locked output
STAGES = ("fetch", "prepare", "check", "fetch-weights", "features", "teach", "train", "evaluate", "export", "report")
NEEDS_TF = ("prepare", "check", "features", "teach", "train", "evaluate", "export")  # predict: LiteRT only


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-q (less) and -v (more): give one of them")
    loud = console.configure(args.verbose, args.quiet)  # before anything imports TensorFlow
    # Our own loggers at INFO; third-party ones (httpx logs every Prefect API call) at WARNING unless asked.
    logging.basicConfig(level=logging.INFO if loud else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not loud:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(console.Formatter())
    for name in ("tasks", "flows"):  # -q: our warnings and errors only
        logging.getLogger(name).setLevel(logging.WARNING if console.quiet() else logging.INFO)
    show_stack = getattr(args, "traceback", False) or os.environ.get("TLPIPE_TRACEBACK", "") not in ("", "0")
    label = " ".join(str(a) for a in (args.command, getattr(args, "key", None)) if a)
    stage = args.command in STAGES
    start = time.perf_counter()
    try:
        if stage:
            progress.interval()  # a bad TLPIPE_PROGRESS_INTERVAL is said before any work
            _check_runner()  # before any work: not while a `tlpipe pipeline` that did not start us runs
            print(f"tlpipe {label}: started", flush=True)
        if args.command in NEEDS_TF:
            console.import_tensorflow()
        result = args.run(args)
    except KeyboardInterrupt:
        if show_stack:
            raise
        print(f"tlpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure is one line unless asked for the stack
        if show_stack:
            raise
        print(f"tlpipe {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 1
    if stage:
        print(f"tlpipe {label}: done in {time.perf_counter() - start:.1f} s: {console.one_line(result)}")
        if getattr(args, "json", False):
            print(json.dumps(result, indent=2))
    elif result is not None:
        print(json.dumps(result, indent=2) if not isinstance(result, str) else result)
    return 0


def error_line(e: BaseException) -> str:
    """One line for an error: its message (a KeyError's without the quotes); TensorFlow's own errors
    by their short message; anything unexpected also by type, with where to see the stack. A write
    that found no room (a full disk or quota, the file-size limit: ENOSPC, EFBIG, EDQUOT, also as
    TensorFlow or h5py word them) is said as such, naming the file where the error does (a message of
    ours that already says which file it could not write is kept)."""
    from tasks.core.io import no_room

    room = no_room(e)
    if room is not None and ": could not write " not in str(e):
        return " ".join(str(room).split())
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    else:
        text = str(getattr(e, "message", None) or e) or type(e).__name__
    text = " ".join(text.split())  # one line
    if not isinstance(e, EXPECTED) and not _is_tf_error(e):
        text = f"{type(e).__name__}: {text} (an unexpected error: rerun with --traceback for the stack)"
    return text


def _is_tf_error(e: BaseException) -> bool:
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(e, tf.errors.OpError)


def _check_runner() -> None:
    """A stage command refuses, naming the pipeline, while a `tlpipe pipeline` other than the one that
    started it runs this project's stages (tasks/stages/runner.py)."""
    from tasks.stages import runner

    try:
        root = find_project().root
    except FileNotFoundError:
        return  # the stage itself says so
    runner.check(root)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _fetch(args):
    from tasks.stages.data import fetch_stage

    record = fetch_stage(find_project(), args.key)
    return {"dataset": args.key, "format": record["format"], "files": record.get("file_count", len(record["files"])),
            "skipped": record["skipped"]}


def _prepare(args):
    from tasks.stages.data import prepare_stage

    manifest = prepare_stage(find_project(), args.key)
    return {"dataset": args.key, "splits": {s: v["count"] for s, v in manifest["splits"].items()},
            "skipped": manifest["skipped"]}


def _check(args):
    from tasks.stages.data import check_stage

    summary = check_stage(find_project(), args.key)
    return {"dataset": args.key, "verdict": summary["verdict"], **summary["counts"],
            "leaks": sum(summary["leaks"].values()), "page": f"reports/data/{args.key}/README.md"}


def _fetch_weights(args):
    from tasks.stages.data import weights_stage

    record = weights_stage(find_project(), args.key)
    return {k: record[k] for k in ("weights", "file", "format", "source", "url", "sha256", "bytes", "pinned")}


def _features(args):
    from tasks.stages.data import features_stage

    info = features_stage(find_project(), args.key)
    return {k: info.get(k) for k in ("base", "alpha", "image_size", "dim", "splits", "speed")}


def _teach(args):
    from tasks.stages.data import teach_stage

    record = teach_stage(find_project(), args.key)
    return {k: record[k] for k in ("teacher", "features", "temperature", "examples", "teacher_train_accuracy")}


def _model_stage(name):
    def run(args):
        from tasks.stages import models as model_stages

        result = getattr(model_stages, f"{name}_stage")(find_project(), args.key)
        return {k: v for k, v in result.items() if k not in ("recipe", "most_confused")}
    return run


def _report(args):
    from tasks.stages.models import report_page_stage, report_stage

    if args.key:
        return str(report_page_stage(find_project(), args.key)["page"])
    return str(report_stage(find_project())["index"])


def _predict(args):
    from pathlib import Path

    from tasks.evaluate.predict import find_images, format_predictions, mode_for_stages, predict, predict_to_parquet

    if args.out:  # the batch path: folders recursively, all cores, one Parquet row per image
        mode = mode_for_stages()  # -q has set TLPIPE_QUIET (tasks/stages/console.py)
        summary = predict_to_parquet(Path(args.model), [Path(i) for i in args.images], Path(args.out),
                                     top_k=args.top_k, batch_size=args.batch_size, threads=args.threads,
                                     progress=mode, emit=lambda line: print(f"tlpipe predict: {line}", flush=True),
                                     setup=console.native_quiet)
        if summary["failed"]:
            raise RuntimeError(f"{summary['failed']} of {summary['images']} images could not be classified "
                               f"(their rows in {args.out} give the reason in `error`)")
        return None
    images = find_images(args.images)  # a folder: its images, recursively
    if not images:
        raise FileNotFoundError(f"no image files in {', '.join(args.images)}")
    with console.native_quiet():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        results = predict(Path(args.model), images, top_k=args.top_k)
    print(format_predictions(results), flush=True)  # the good images' results, also when some failed
    failed = [r for r in results if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} images could not be classified: "
                           + "; ".join(f"{r['image']}: {r['error']}" for r in failed))
    return None


def _pipeline(args):
    from flows.pipeline import pipeline, sole_runner
    from flows.runs import ephemeral_server

    root = str(find_project().root)
    command = " ".join(["tlpipe pipeline", *args.keys, *(["--models"] if args.models else [])])
    with sole_runner(root, command):  # refused here, in one line, when another runner is at work
        ephemeral_server()  # without PREFECT_API_URL: a temporary API that dies with this process
        return pipeline(datasets=args.keys or None, root=root, models=args.models)


SERVER_HELP = (
    "no Prefect server is configured (PREFECT_API_URL is unset), so the schedule would live on a temporary "
    "server that stops with this process. Start one with `prefect server start` (API and UI on "
    "http://127.0.0.1:4200) and point at it with `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` "
    "(or export PREFECT_API_URL=<your server>/api); or pass --ephemeral to serve on a temporary server anyway")


def _serve(args):
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url and not args.ephemeral:
        raise RuntimeError(SERVER_HELP)
    from flows.pipeline import pipeline

    pipeline.serve(name=args.name, cron=args.cron, parameters={"root": str(find_project().root)})


def _deploy(args):
    from flows.compat import deploy

    code = deploy(args.args)
    if code:
        raise RuntimeError(f"prefect deploy {' '.join(args.args) or '--all'} exited {code}")


def _status(args):
    from tasks.stages.status import format_status, status

    root = find_project().root
    try:
        result = status(root)
    except Exception as e:  # DVC's own errors (a broken dvc.yaml, a lock): one line, as every error
        if type(e).__name__ == "LockError":
            raise RuntimeError(f"{root}: DVC's repo lock is held by another DVC command; try again when it "
                               "finishes") from e
        if type(e).__module__.startswith("dvc"):
            raise RuntimeError(f"{root}: DVC could not read the project: {e}") from e
        raise
    return result if args.json else format_status(result)


def _check_remote(args):
    from tasks.stages.remote import check_remote

    return check_remote(name=args.name)


class _SubParsers(argparse._SubParsersAction):
    """Every subcommand also takes --traceback (SUPPRESS: an absent one keeps the top-level value)."""

    def add_parser(self, name, **kwargs):
        p = super().add_parser(name, **kwargs)
        if kwargs.get("prefix_chars", "-") != "-":  # `deploy` hands every argument to prefect
            return p
        p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show the Python stack instead of one line")
        return p


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's log, Keras' printout and third-party INFO logs too")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only a stage's start and end lines: no progress lines or bars, no epoch lines")
    parser.add_argument("--json", action="store_true", help="print a stage's full result as JSON")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the Python stack instead of one line (or TLPIPE_TRACEBACK=1)")
    parser.register("action", "parsers", _SubParsers)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, run, help_ in (("fetch", _fetch, "fetch a dataset's files"),
                             ("prepare", _prepare, "build a dataset's TFRecord shards")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("key", help="dataset key from params.yaml (e.g. mnist, emnist_letters, cards, banknotes, "
                                   "or any key with fetch.<key>.kind: folder)")
        p.set_defaults(run=run)
    p = sub.add_parser("check", help="check a prepared dataset: duplicates, leaks, label issues, outliers")
    p.add_argument("key", help="dataset key with an entry in params.yaml `check` (e.g. cards, mnist)")
    p.set_defaults(run=_check)
    p = sub.add_parser("fetch-weights", help="fetch pinned pretrained weights")
    p.add_argument("key", help="weights key from params.yaml `weights` (e.g. mobilenet_v2_035_224)")
    p.set_defaults(run=_fetch_weights)
    p = sub.add_parser("features", help="compute a bottleneck-feature cache")
    p.add_argument("key", help="features key from params.yaml `features` (e.g. cards_v2_100_cut13)")
    p.set_defaults(run=_features)
    p = sub.add_parser("teach", help="a teacher's softened predictions for a distilled student")
    p.add_argument("key", help="teach key from params.yaml `teach` (e.g. cards_cut_v2_100_to_v2_035)")
    p.set_defaults(run=_teach)
    for name in ("train", "evaluate", "export"):
        p = sub.add_parser(name, help=f"{name} a model (a key of params.yaml `models`)")
        p.add_argument("key", help="model key, e.g. emnist_cnn, mnist_transfer_conv")
        p.set_defaults(run=_model_stage(name))
    p = sub.add_parser("report", help="a model's page (with a key), or reports/README.md, the index")
    p.add_argument("key", nargs="?", help="model key: write reports/KEY/README.md and its index row")
    p.set_defaults(run=_report)
    p = sub.add_parser("predict", help="classify images with an exported .tflite model",
                       description="Classify images with an exported .tflite model: print the top-k labels of "
                       "each, or with --out write one Parquet row per image (batched on every core, a progress "
                       "bar on a terminal, a line about every 30 s in a log).")
    p.add_argument("model", help="a .tflite file (labels from labels.txt beside it, else its TFLite metadata)")
    p.add_argument("images", nargs="+", help="image files, or folders (searched recursively for images)")
    p.add_argument("--top-k", type=_positive, default=3, help="labels to show per image (>= 1)")
    p.add_argument("--out", metavar="FILE.parquet",
                   help="write the predictions here (path, top-k labels and scores, size, error, model sha256) "
                        "instead of printing them; an unreadable image is a row with its reason")
    p.add_argument("--batch-size", type=_positive, default=16, help="with --out: images per interpreter call")
    p.add_argument("--threads", type=_positive, default=None,
                   help="with --out: decoding threads and the interpreter's threads (default: every core)")
    p.set_defaults(run=_predict)
    p = sub.add_parser("pipeline", help="run the whole DAG as a Prefect flow")
    p.add_argument("keys", nargs="*", help="datasets (default: params.yaml `datasets`), or any dvc.yaml stage "
                                           "(prepare@mnist, train) or foreach key: it and its upstream")
    p.add_argument("--models", action="store_true", help="also train, evaluate, export and report every model")
    p.set_defaults(run=_pipeline)
    p = sub.add_parser("serve", help="serve the pipeline flow as a scheduled Prefect deployment")
    p.add_argument("--name", default="tlpipe-nightly")
    p.add_argument("--cron", default="0 3 * * *")
    p.add_argument("--ephemeral", action="store_true",
                   help="serve even without a Prefect server (a temporary one that stops with this process)")
    p.set_defaults(run=_serve)
    p = sub.add_parser("deploy", help="create/update prefect.yaml's deployments on the Prefect server",
                       prefix_chars="\0")
    p.add_argument("args", nargs=argparse.REMAINDER, help="prefect deploy's arguments (default: --all), "
                   "e.g. --name tlpipe-data")
    p.set_defaults(run=_deploy)
    p = sub.add_parser("check-remote", help="can this checkout reach its DVC remote with these credentials")
    p.add_argument("name", nargs="?", help="a DVC remote (default: the project's default remote)")
    p.set_defaults(run=_check_remote)
    p = sub.add_parser("status", help="which models and datasets were made by other code, params or command "
                                      "than the tree holds (informational: exit 0, no data needed)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="the listing as JSON: {stages, stale: [{stage, kind, key, code, params, command}]}")
    p.set_defaults(run=_status)
    for name, p in sub.choices.items():  # `tlpipe pipeline --verbose` as well as `tlpipe --verbose pipeline`
        if name == "deploy":  # passes every argument on to `prefect deploy`
            continue
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show TensorFlow's log, Keras' printout and third-party INFO logs too")
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only the stage's start and end lines: no progress, no epoch lines")
        if name in STAGES:
            p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="print the stage's full result as JSON")
    return parser


if __name__ == "__main__":
    sys.exit(main())
