"""Command line: the pipeline's stages without Snakemake.

    python -m sensorium_pipeline inspect results/archives/<mouse>.zip
    python -m sensorium_pipeline inspect results/data/<mouse>
    python -m sensorium_pipeline verify results/data/<mouse>
    python -m sensorium_pipeline simulate --mouse dynamic90001-1-1-Simulated-5e1a0c3d --seed 1 --out sim/
    python -m sensorium_pipeline convert sim/<mouse>.zip results/data/<mouse>
    python -m sensorium_pipeline deeplake-export results/data/<mouse> results/deeplake/<mouse>
    python -m sensorium_pipeline deeplake-ingest results/deeplake/<mouse> results/data/<mouse>
    python -m sensorium_pipeline validate results/submission --store results/data/<mouse> ...
    python -m sensorium_pipeline score results/predictions/ensemble/<mouse>.zarr --store results/data/<mouse>
    python -m sensorium_pipeline report results
    python -m sensorium_pipeline import-weights data/experiments/true_batch_001 --fold 0 --store results/data/<mouse> ... --out model.pt

Each command prints a short JSON summary on stdout; an error a user can act on (a bad file,
a bad setting) prints one line naming the file and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SensoriumError
from .layout import TIERS
from .logs import log_to


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _inspect_archive(path: Path) -> dict[str, Any]:
    from .data.archive import open_archive

    with open_archive(path) as archive:
        tiers = archive.tiers
        return {
            "kind": "archive",
            "path": str(path),
            "root": archive.root,
            "dtype": str(archive.dtype),
            "t_pad": archive.t_pad,
            "n_neurons": archive.n_neurons,
            "n_ids": int(len(tiers)),
            "trials": {tier: int((tiers == tier).sum()) for tier in (*TIERS, "none") if (tiers == tier).any()},
        }


def _inspect_store(path: Path) -> dict[str, Any]:
    from .data.integrity import shard_report
    from .data.store import open_mouse

    store = open_mouse(path)
    trials = store.trials
    integrity = shard_report(store)
    missing = integrity.pop("missing_rows")
    integrity["missing_rows"] = {m: {"count": len(r), "first": r[:5]} for m, r in missing.items()}
    integrity["complete"] = not missing and integrity["table_matches_arrays"]
    integrity["content"] = "run `python -m sensorium_pipeline verify` to check every row against its hash"
    return {
        "kind": "store",
        "path": str(path),
        "mouse": store.mouse,
        "t_pad": store.t_pad,
        "n_neurons": store.n_neurons,
        "source_dtype": store.group.attrs.get("source_dtype"),
        "archive_sha256": store.group.attrs.get("archive_sha256"),
        "trials": trials["tier"].value_counts().to_dict(),
        "repeated_stimuli": int((trials["stimulus_group"].value_counts() > 1).sum()),
        "valid_frames": {"min": int(trials["valid_frames"].min()), "max": int(trials["valid_frames"].max())},
        "integrity": integrity,
    }


def _inspect_predictions(path: Path) -> dict[str, Any]:
    import numpy as np

    from .scoring.predictions import load_predictions

    preds = load_predictions(path)
    tiers, counts = np.unique(preds.tiers, return_counts=True)
    return {
        "kind": "predictions",
        "path": str(path),
        "mouse": preds.mouse,
        "n_neurons": int(len(preds.unit_ids)),
        "trials": {str(t): int(c) for t, c in zip(tiers, counts, strict=True)},
    }


def cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.path)
    if not path.exists():
        raise SensoriumError(f"{path}: no such file or folder")
    if path.suffix == ".zip":
        return _inspect_archive(path)
    if path.suffix == ".zarr":
        return _inspect_predictions(path)
    return _inspect_store(path)


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    from .data.integrity import verify_store

    return verify_store(args.store)


def cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from .simulate import SimulationConfig, simulate_mouse

    settings: dict[str, Any] = {}
    if args.config:
        settings.update(yaml.safe_load(Path(args.config).read_text()) or {})
    for item in args.set or []:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    settings.update({"mouse": args.mouse, "seed": args.seed})
    config = SimulationConfig.from_dict(settings)
    out = Path(args.out)
    return simulate_mouse(config, out / f"{config.mouse}.zip", out / f"{config.mouse}.solutions.parquet")


def cmd_convert(args: argparse.Namespace) -> dict[str, Any]:
    from .data.convert import convert_archive

    return convert_archive(
        args.archive,
        args.out,
        dtype=args.dtype,
        chunk_frames=args.chunk_frames,
        verify_trials=args.verify_trials,
        workers=args.workers,
        compression=args.compression,
    )


def cmd_deeplake_export(args: argparse.Namespace) -> dict[str, Any]:
    from .data.deeplake_io import export_deeplake

    return export_deeplake(
        args.store, args.dest, verify_trials=args.verify_trials
    )


def cmd_deeplake_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from .data.deeplake_io import ingest_deeplake

    return ingest_deeplake(
        args.source,
        args.store,
        mouse=args.mouse,
        dtype=args.dtype,
        chunk_frames=args.chunk_frames,
        verify_trials=args.verify_trials,
        compression=args.compression,
    )


def _stores(paths: Sequence[str]) -> dict[str, Any]:
    from .data.store import open_mouse

    stores = [open_mouse(p) for p in paths]
    return {store.mouse: store for store in stores}


def _window(args: argparse.Namespace):
    from .scoring.metrics import EvaluationWindow

    return EvaluationWindow(skip_first=args.skip_first, max_frames=args.max_frames, skip_last=args.skip_last)


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    from .scoring.submission import validate_submission

    stores = _stores(args.store)
    validate_submission(args.submission, stores, _window(args), csv_fallback=not args.no_csv)
    return {"valid": True, "submission": args.submission, "mice": sorted(stores)}


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from .layout import SCORED_TIERS
    from .scoring.evaluate import evaluate
    from .scoring.predictions import load_predictions

    stores = _stores(args.store)
    predictions = {load_predictions(p).mouse: p for p in args.predictions}
    solutions = {}
    for path in args.solutions or []:
        from .scoring.solutions import read_solutions

        mice = set(read_solutions(path)["mouse"])
        solutions.update({mouse: path for mouse in mice})
    with tempfile.TemporaryDirectory() as scratch:
        out_json = args.out or str(Path(scratch) / "scores.json")
        out_neurons = str(Path(out_json).with_suffix("")) + ".neurons.parquet"
        report = evaluate(
            predictions=predictions,
            stores={m: stores[m].path for m in predictions},
            solutions=solutions,
            window=_window(args),
            tiers=args.tiers or list(SCORED_TIERS),
            out_json=out_json,
            out_neurons_parquet=out_neurons,
        )
    return {"tiers": report["tiers"], "tracks": report["tracks"]}


def cmd_import_weights(args: argparse.Namespace) -> dict[str, Any]:
    from .models.import_weights import import_fold

    checkpoint = import_fold(args.experiment, args.fold, args.store, args.out, reference_mice=args.mice)
    return {"imported": str(checkpoint), "fold": args.fold, "out": args.out}


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    from .report.build import build_report

    mice = None
    if args.config:
        import yaml

        try:
            mice = (yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}).get("mice")
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise SensoriumError(f"{args.config}: cannot read the workflow config: {exc}") from exc
    return build_report(args.results, args.out or Path(args.results) / "report", mice)


def summary_table(report: dict[str, Any]) -> str:
    """Plain-text table of a scores JSON: per tier the ranking metric and the noise ceiling."""
    lines = [f"{'tier':<18} {'single-trial r':>14} {'corr to avg':>11} {'ceiling':>8} {'of ceiling':>10}"]
    for tier, s in report["tiers"].items():
        cells = [s.get(k) for k in ("single_trial_correlation", "correlation_to_average", "ceiling")]
        fraction = s.get("fraction_of_ceiling")
        text = [f"{c:.3f}" if c is not None else "-" for c in cells]
        lines.append(
            f"{tier:<18} {text[0]:>14} {text[1]:>11} {text[2]:>8} "
            + (f"{fraction:>10.1%}" if fraction is not None else f"{'-':>10}")
        )
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> None:
    path = Path(args.scores)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SensoriumError(f"{path}: cannot read scores JSON: {exc}") from exc
    print(f"{path}\n{summary_table(report)}")


def _add_window(parser: argparse.ArgumentParser) -> None:
    from .scoring.metrics import EvaluationWindow

    w = EvaluationWindow()
    parser.add_argument("--skip-first", type=int, default=w.skip_first,
                        help=f"frames skipped at a trial's start ({w.skip_first})")
    parser.add_argument("--max-frames", type=int, default=w.max_frames, help=f"frames of a trial at most ({w.max_frames})")
    parser.add_argument("--skip-last", type=int, default=w.skip_last,
                        help=f"frames dropped before max-frames ({w.skip_last})")


def _add_store_options(parser: argparse.ArgumentParser, *, source: str, workers: bool) -> None:
    """The ``conversion.*`` options of a store-writing command, with the writer's defaults."""
    from .data.store_writer import COMPRESSIONS, STORE_DTYPES, StoreOptions

    o = StoreOptions()
    parser.add_argument("--dtype", choices=STORE_DTYPES, default=o.dtype, help=f"dtype of the stored arrays ({o.dtype})")
    parser.add_argument("--chunk-frames", type=int, default=o.chunk_frames, help=f"frames per Zarr chunk ({o.chunk_frames})")
    parser.add_argument("--verify-trials", type=int, default=o.verify_trials,
                        help=f"trials re-read and compared with the {source} ({o.verify_trials})")
    if workers:
        parser.add_argument("--workers", type=int, default=o.workers, help=f"conversion threads ({o.workers})")
    parser.add_argument("--compression", choices=list(COMPRESSIONS), default=o.compression,
                        help=f"codec of the per-trial arrays ({o.compression})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sensorium_pipeline",
        description="SENSORIUM 2023 pipeline stages without Snakemake. Each command prints JSON.",
        epilog="`python -m sensorium_pipeline <command> --help` explains a command and gives an example.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "inspect",
        help="summarise an archive (.zip), a converted store (folder) or predictions (.zarr)",
        description="An archive is validated as the convert step does (members, shapes, dtypes, tiers); "
        "a store or predictions folder is opened and summarised.",
    )
    p.add_argument("path", help="an archive (.zip), a converted store (folder) or predictions (.zarr)")
    p.set_defaults(run=cmd_inspect)

    p = commands.add_parser(
        "verify",
        help="check a converted store against the per-trial hashes recorded at conversion",
        description="Every shard of every per-trial array must be present and every row must hash to "
        "the sha256 the converter recorded in trials.parquet. Reads the whole store; exit status 2 "
        "and one line naming the first problems when it is damaged.",
    )
    p.add_argument("store", help="a converted mouse, e.g. results/data/<mouse>")
    p.set_defaults(run=cmd_verify)

    p = commands.add_parser(
        "simulate",
        help="write a simulated mouse: an archive in the official layout and its solutions",
        description="Writes <out>/<mouse>.zip and <out>/<mouse>.solutions.parquet (noise-free rates and "
        "withheld responses). Settings are the fields of SimulationConfig.",
    )
    from .simulate.config import SimulationConfig

    simulated = SimulationConfig()
    p.add_argument("--mouse", default=simulated.mouse, help="folder name of the archive")
    p.add_argument("--seed", type=int, default=simulated.seed, help="random seed: the same seed writes the same archive")
    p.add_argument("--config", help="YAML file of SimulationConfig fields")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="one field, e.g. --set n_neurons=500")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(run=cmd_simulate)

    p = commands.add_parser(
        "convert",
        help="convert an archive to a Zarr store + Parquet tables",
        description="Validates the archive, writes the store atomically and verifies a sample of trials.",
    )
    p.add_argument("archive", help="an archive in the official layout (.zip)")
    p.add_argument("out", help="store folder to create, e.g. results/data/<mouse>")
    _add_store_options(p, source="archive", workers=True)
    p.set_defaults(run=cmd_convert)

    p = commands.add_parser(
        "deeplake-export",
        help="write a converted store as a local Deep Lake 4 dataset (needs the deeplake extra)",
        description="One row per trial (videos, responses, behavior, pupil_center, id) and the mouse's "
        "metadata (neuron ids, coordinates, statistics, tiers); written atomically, a sample read back.",
    )
    p.add_argument("store", help="a converted mouse, e.g. results/data/<mouse>")
    p.add_argument("dest", help="dataset folder to create, e.g. results/deeplake/<mouse>")
    from .data.store_writer import StoreOptions

    p.add_argument("--verify-trials", type=int, default=StoreOptions.verify_trials,
                   help=f"rows read back and compared with the store ({StoreOptions.verify_trials})")
    p.set_defaults(run=cmd_deeplake_export)

    p = commands.add_parser(
        "deeplake-ingest",
        help="convert a local Deep Lake 4 dataset to a store (needs the deeplake extra)",
        description="Reads a dataset laid out as deeplake-export writes it and writes the same store "
        "convert writes. The 2023 hub:// datasets used the retired Deep Lake v3 API and are refused.",
    )
    p.add_argument("source", help="dataset folder (or deeplake:<folder>)")
    p.add_argument("store", help="store folder to create, e.g. results/data/<mouse>")
    p.add_argument("--mouse", help="expected mouse name (checked against the dataset's metadata)")
    _add_store_options(p, source="dataset", workers=False)
    p.set_defaults(run=cmd_deeplake_ingest)

    p = commands.add_parser(
        "validate",
        help="check submission files against the stores with the scorer's rules",
        description="Checks main_track.zip, bonus_live.zip, bonus_final.zip (and csv/) in SUBMISSION: "
        "columns, (mouse, trial) pairs, neuron ids and their order, prediction shapes, finite values.",
    )
    p.add_argument("submission", help="folder holding the submission files")
    p.add_argument("--store", action="append", required=True, help="a converted mouse (repeat per mouse)")
    p.add_argument("--no-csv", action="store_true", help="do not check the CSV fallback")
    _add_window(p)
    p.set_defaults(run=cmd_validate)

    p = commands.add_parser(
        "score",
        help="score predictions with the competition's metrics",
        description="Single-trial correlation, correlation to average and FEVE per tier (bonus tiers per "
        "stimulus type). Without --solutions, the tiers whose responses the store releases are scored.",
    )
    p.add_argument("predictions", nargs="+", help="predictions folders (<entry>/<mouse>.zarr)")
    p.add_argument("--store", action="append", required=True, help="a converted mouse (repeat per mouse)")
    p.add_argument("--solutions", action="append", help="a solutions Parquet (e.g. from the simulator)")
    p.add_argument("--tiers", nargs="+", help="tiers to score (default: oracle and every test tier)")
    p.add_argument("--out", help="also write the scores JSON here (and <out>.neurons.parquet)")
    _add_window(p)
    p.set_defaults(run=cmd_score)

    p = commands.add_parser(
        "summary",
        help="print a scores JSON (results/scores/<entry>.json) as a table",
        description="Per tier: single-trial correlation (the ranking metric), correlation to average, "
        "the noise ceiling (simulated data) and the fraction of it reached.",
    )
    p.add_argument("scores", help="a scores JSON written by the evaluate step or by `score --out`")
    p.set_defaults(run=cmd_summary)

    p = commands.add_parser(
        "import-weights",
        help="turn a fold of the 1st-place team's published DwiseNeuro weights into our model.pt",
        description="Reads the best checkpoint of EXPERIMENT/fold_<k>/ (model-<epoch>-<score>.pth, as the "
        "reference trainer lays them out), builds our dwiseneuro model from its parameters, maps every tensor "
        "(an unmapped or missing one is an error) and writes the model file that predict reads.",
    )
    p.add_argument("experiment", help="the experiment folder, e.g. data/experiments/true_batch_001")
    p.add_argument("--fold", type=int, required=True, help="the fold k of fold_<k>/")
    p.add_argument("--store", action="append", required=True, help="a converted store of each of the model's mice")
    p.add_argument(
        "--mice", nargs="+", help="the mouse of each readout, in order (default: the reference's ten real mice)"
    )
    p.add_argument("--out", required=True, help="the model file to write (results/models/<model>/fold<k>/model.pt)")
    p.set_defaults(run=cmd_import_weights)

    p = commands.add_parser(
        "report",
        help="draw the report's plots and scores table from a results folder",
        description="Reads RESULTS/scores, RESULTS/models/*/fold*/metrics.csv, the ensemble's predictions, "
        "the stores and the solutions (a simulated mouse's, or with --config each mouse's mice[].solutions), "
        "and writes scores.html, per-neuron correlation histograms and map, training curves and per-mouse "
        "traces, as the workflow's report rules do.",
    )
    p.add_argument("results", help="the workflow's results folder")
    p.add_argument("--out", help="folder for the plots (default: RESULTS/report)")
    p.add_argument("--config", help="the run's workflow config (its mice[].solutions name the ground truth)")
    p.set_defaults(run=cmd_report)
    _add_examples(commands)
    return parser


#: One worked example per command, shown at the end of its ``--help``.
EXAMPLES: dict[str, str] = {
    "inspect": "python -m sensorium_pipeline inspect results/archives/<mouse>.zip\n"
    "  python -m sensorium_pipeline inspect results/data/<mouse>\n"
    "  python -m sensorium_pipeline inspect results/predictions/ensemble/<mouse>.zarr",
    "verify": "python -m sensorium_pipeline verify results/data/<mouse>",
    "simulate": "python -m sensorium_pipeline simulate --mouse dynamic90001-1-1-Simulated-5e1a0c3d --seed 1 "
    "--set n_neurons=200 --out sim/",
    "convert": "python -m sensorium_pipeline convert sim/<mouse>.zip results/data/<mouse> --workers 2",
    "validate": "python -m sensorium_pipeline validate results/submission "
    "--store results/data/<mouse 1> --store results/data/<mouse 2>",
    "score": "python -m sensorium_pipeline score results/predictions/ensemble/<mouse>.zarr "
    "--store results/data/<mouse> --solutions results/simulated/<mouse>.solutions.parquet --out scores.json",
    "summary": "python -m sensorium_pipeline summary results/scores/ensemble.json",
    "report": "python -m sensorium_pipeline report results --out my_plots",
    "import-weights": "python -m sensorium_pipeline import-weights data/experiments/true_batch_001 --fold 0 "
    "--store results/data/<mouse 1> ... --store results/data/<mouse 10> --out results/models/dwiseneuro/fold0/model.pt",
    "deeplake-export": "python -m sensorium_pipeline deeplake-export results/data/<mouse> results/deeplake/<mouse>",
    "deeplake-ingest": "python -m sensorium_pipeline deeplake-ingest results/deeplake/<mouse> results/data/<mouse> "
    "--mouse <mouse>",
}


def _add_examples(commands: argparse._SubParsersAction) -> None:
    """Append each command's example to its ``--help`` (kept apart so commands stay short)."""
    for name, sub in commands.choices.items():
        if name in EXAMPLES:
            sub.epilog = f"example:\n  {EXAMPLES[name]}"
            sub.formatter_class = _ExampleFormatter


class _ExampleFormatter(argparse.HelpFormatter):
    """Wraps the description as usual but keeps the example's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with log_to(None):  # the package's progress lines on stderr
            result = args.run(args)
        if result is not None:
            _print(result)
    except SensoriumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
