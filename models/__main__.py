"""Training-side command line.

    python -m models train ibi-slpdb --data ../shared/data/ibi-sleep-slpdb --out models/shipped
    python -m models train ibi-slpdb --data ../shared/data/ibi-sleep-slpdb --quick   # smoke run, temp dir
    python -m models card ibi-slpdb      # re-render the card from the last training report

Models are registered by name below as ``"module:function"`` strings, imported only when chosen, so that
adding a model (or an ``evaluate`` / ``export`` / ``quantize`` subcommand) never makes the others import
what they do not need.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import tempfile
from pathlib import Path

# name -> "module:function"; the function takes (data, out, *, quick, seed, card_path, work, command) -> report
TRAINERS = {
    "ibi-slpdb": "models.ibi.pipeline:run",
}
# name -> ("module:render function", report written by train (under the work dir), default card path)
CARDS = {
    "ibi-slpdb": ("models.ibi.card:render", "work/ibi-slpdb/ibi_slpdb_causal.report.json", "cards/ibi-slpdb.md"),
}
PACKAGE = Path(__file__).resolve().parent


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("training needs PyTorch: pip install 'edged[train]'", file=sys.stderr)
        return 2
    run = _load(TRAINERS[args.model])
    command = "python -m models " + " ".join(shlex.quote(a) for a in args.argv)
    if args.out is None:
        if not args.quick:
            print("--out is required (except with --quick, which writes to a temporary directory)", file=sys.stderr)
            return 2
        args.out = Path(tempfile.mkdtemp(prefix=f"edged-{args.model}-quick-"))
    report = run(args.data, args.out, quick=args.quick, seed=args.seed, card_path=args.card,
                 work=args.work, command=command)
    print(f"{report['id']}: wrote {Path(args.out) / report['manifest']} ({report['wall_seconds']:.0f} s)")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    """Re-render a model card from the report its training run wrote (text changes without retraining; the
    numbers stay those of that run)."""
    import json

    target, report_rel, card_rel = CARDS[args.model]
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m models", description="Train and export edged's models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (training loss)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="cross-validate, fit, export, quantise, write manifest and card")
    train.add_argument("model", choices=sorted(TRAINERS))
    train.add_argument("--data", type=Path, required=True, help="dataset directory")
    train.add_argument("--out", type=Path, help="output directory for the ONNX files and manifest")
    train.add_argument("--quick", action="store_true", help="smoke run: few records, few steps, < 1 min")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--work", type=Path, help="for what does not ship: float model, full report "
                       "(default: models/work/<model>, git-ignored; with --quick, <out>/work)")
    train.add_argument("--card", type=Path, help="model card path (default: models/cards/<model>.md; with --quick, in --out)")
    card = sub.add_parser("card", help="re-render a model card from its training report")
    card.add_argument("model", choices=sorted(CARDS))
    card.add_argument("--report", type=Path, help="training report (default: the one train wrote under models/work)")
    card.add_argument("--card", type=Path, help="output (default: models/cards/<model>.md)")
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return {"train": _cmd_train, "card": _cmd_card}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
