"""Training-side command line, one subcommand per step of the entry-module contract (:mod:`models.registry`).

    python -m models list                               # every model: shipped manifest, synthetic or real
    python -m models train ibi-slpdb --out models/shipped          # --data defaults to the model's data set
    python -m models train ibi-slpdb --quick            # smoke run into a temporary directory
    python -m models evaluate ibi-slpdb                 # subject-wise folds only
    python -m models export ibi-slpdb                   # float ONNX + manifest from the work directory
    python -m models quantize ibi-slpdb --out DIR       # static int8 of that float model
    python -m models card ibi-slpdb                     # re-render the card from the last training report

Only the chosen model's entry module is imported. Besides the contract's functions, an entry module may set
``DATA`` (its data set's folder under the shared data root, used when ``--data`` is not given; None or
absent for a model trained on its synthetic generator) and ``SHIPPED`` (its manifest, relative to
``models/``, for ``list``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from models.registry import MODELS

PACKAGE = Path(__file__).resolve().parent
SHIPPED_DIR = PACKAGE / "shipped"


def _entry(name: str) -> ModuleType:
    return importlib.import_module(MODELS[name])


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _work(args: argparse.Namespace) -> Path:
    return args.work or PACKAGE / "work" / args.model


def _data(args: argparse.Namespace, entry: ModuleType) -> Path | None:
    """``--data``, else the entry's ``DATA`` under the shared data root, else None (synthetic generator)."""
    if args.data is not None:
        if not args.data.exists():
            raise SystemExit(f"--data {args.data}: no such directory")
        return args.data
    default = getattr(entry, "DATA", None)
    if default is None:
        return None
    from models.datasets import data_root

    path = data_root() / default
    if not path.exists():
        raise SystemExit(f"{args.model}: its data set {path} is not here; give --data DIR")
    return path


def _command(args: argparse.Namespace) -> str:
    return "python -m models " + " ".join(shlex.quote(a) for a in args.argv)


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("training needs PyTorch: pip install 'edged[train]'") from None


def _cmd_train(args: argparse.Namespace) -> int:
    _need_torch()
    entry = _entry(args.model)
    data = _data(args, entry)
    if args.out is None:
        if not args.quick:
            print("--out is required (except with --quick, which writes to a temporary directory)", file=sys.stderr)
            return 2
        args.out = Path(tempfile.mkdtemp(prefix=f"edged-{args.model}-quick-"))
    work = args.work or (args.out / "work" if args.quick else PACKAGE / "work" / args.model)
    report = entry.train(data, args.out, quick=args.quick, seed=args.seed, work=work, command=_command(args))
    print(f"{report['id']}: wrote {Path(args.out) / report['manifest']} ({report['wall_seconds']:.0f} s)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    _need_torch()
    from models.metrics import format_scores

    entry = _entry(args.model)
    result = entry.evaluate(_data(args, entry), quick=args.quick, seed=args.seed, work=_work(args))
    print(result["protocol"])
    print(format_scores({**result, "epochs": result.get("epochs", sum(map(sum, result["confusion"])))},
                        result["classes"]))
    print("confusion (rows reference, columns predicted, order " + "/".join(result["classes"]) + "):")
    for row in result["confusion"]:
        print("  " + " ".join(f"{v:6d}" for v in row))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{args.model}.evaluate.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    entry = _entry(args.model)
    work = _work(args)
    path = entry.export(work, args.out or work)
    print(f"wrote {path}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    entry = _entry(args.model)
    work = _work(args)
    manifest = args.manifest
    if manifest is None:  # the float model `export` left in the work directory
        found = [p for p in sorted(work.glob("*.json")) if _quantization(p) == "float32"]
        if len(found) != 1:
            print(f"{work}: {len(found)} float32 manifests; run `python -m models export {args.model}` "
                  "or give --manifest", file=sys.stderr)
            return 2
        manifest = found[0]
    if args.out is None:
        print("--out is required: the directory for the int8 model and its manifest", file=sys.stderr)
        return 2
    path = entry.quantize(manifest, data=_data(args, entry), out=args.out)
    print(f"wrote {path}")
    return 0


def _quantization(path: Path) -> str | None:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw.get("quantization") if isinstance(raw, dict) else None


def _cmd_card(args: argparse.Namespace) -> int:
    """Re-render a model card from the report its training run wrote (text changes without retraining; the
    numbers stay those of that run)."""
    card_spec = getattr(_entry(args.model), "CARD", None)
    if card_spec is None:
        print(f"{args.model}: its entry module defines no CARD", file=sys.stderr)
        return 2
    target, report_rel, card_rel = card_spec
    report_path = args.report or PACKAGE / report_rel
    try:
        report = json.loads(Path(report_path).read_text())
    except FileNotFoundError:
        print(f"{report_path}: no training report (run `python -m models train {args.model}` first)", file=sys.stderr)
        return 2
    card = args.card or PACKAGE / card_rel
    Path(card).write_text(_load(target)(report))
    print(f"wrote {card}")
    return 0


def shipped_manifest(name: str) -> tuple[Path | None, str]:
    """A model's shipped manifest (its entry's ``SHIPPED``) and, when it cannot be found, why."""
    try:
        entry = _entry(name)
    except Exception as exc:  # noqa: BLE001 - list must show every model, even one whose module is broken
        return None, f"entry module {MODELS[name]} does not import: {type(exc).__name__}: {exc}"
    rel = getattr(entry, "SHIPPED", None)
    if rel is None:
        return None, "its entry module names no SHIPPED manifest"
    path = PACKAGE / rel
    return (path, "") if path.exists() else (None, f"{path.relative_to(PACKAGE.parent)} not built")


def _cmd_list(args: argparse.Namespace) -> int:
    from edged.errors import ModelError
    from edged.scoring.manifest import load_manifest

    rows = []
    for name in sorted(MODELS):
        path, why = shipped_manifest(name)
        if path is None:
            rows.append((name, "-", "-", "-", why))
            continue
        try:
            m = load_manifest(path)
        except ModelError as exc:
            rows.append((name, str(path.relative_to(PACKAGE.parent)), "-", "-", str(exc)))
            continue
        weights = "SYNTHETIC" if m.synthetic else "real"
        kappa = m.metrics.get("kappa")
        note = f"{m.quantization}; " + (f"kappa {kappa}" if isinstance(kappa, (int, float)) and not m.synthetic
                                        else "no accuracy on real data" if m.synthetic else "")
        rows.append((name, str(path.relative_to(PACKAGE.parent)), m.id, weights, note.rstrip("; ")))
    head = ("model", "shipped manifest", "id", "weights", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m models", description="Train and export edged's models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (training loss)")
    sub = parser.add_subparsers(dest="command", required=True)
    names = sorted(MODELS)

    def model_parser(cmd: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(cmd, help=help)
        p.add_argument("model", choices=names)
        return p

    def data_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", type=Path, help="dataset directory (default: the model's data set under "
                       "../shared/data; none for a model trained on its synthetic generator)")

    def work_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--work", type=Path, help="for what does not ship: float model, full report "
                       "(default: models/work/<model>, git-ignored; train --quick: <out>/work)")

    train = model_parser("train", "cross-validate, fit, export, quantise, write manifest and card")
    data_option(train)
    train.add_argument("--out", type=Path, help="output directory for the ONNX file and manifest")
    train.add_argument("--quick", action="store_true", help="smoke run on a tiny data set, seconds")
    train.add_argument("--seed", type=int, default=0)
    work_option(train)

    evaluate = model_parser("evaluate", "subject-wise folds: accuracy, kappa, macro and per-class F1, confusion")
    data_option(evaluate)
    evaluate.add_argument("--out", type=Path, help="also write <out>/<model>.evaluate.json")
    evaluate.add_argument("--quick", action="store_true", help="tiny data set and training, seconds")
    evaluate.add_argument("--seed", type=int, default=0)
    work_option(evaluate)

    export = model_parser("export", "the trained float model in --work -> float ONNX + manifest")
    export.add_argument("--out", type=Path, help="output directory (default: the work directory)")
    work_option(export)

    quantize = model_parser("quantize", "static int8 (calibrated on the data) of an exported float model")
    data_option(quantize)
    quantize.add_argument("--manifest", type=Path, help="float model's manifest (default: the one export wrote)")
    quantize.add_argument("--out", type=Path, help="output directory for the int8 model and manifest")
    work_option(quantize)

    card = model_parser("card", "re-render a model card from its training report")
    card.add_argument("--report", type=Path, help="training report (default: the one train wrote under models/work)")
    card.add_argument("--card", type=Path, help="output (default: models/cards/<model>.md)")

    sub.add_parser("list", help="every registered model, its shipped manifest, synthetic or real")

    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "export": _cmd_export, "quantize": _cmd_quantize,
                "card": _cmd_card, "list": _cmd_list}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
