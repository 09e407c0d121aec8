"""``python -m models train masleepnet``: MASleepNet's streaming form (unidirectional LSTM, state carried
by edged) trained on the synthetic PSG generator; the recipe is the one ULW-SleepNet uses
(:mod:`models.seed.ulw_entry`), with this design's architecture, training crops and card text.

SYNTHETIC weights: see :mod:`models.seed.synthetic_psg` and the card.
"""

from __future__ import annotations

from pathlib import Path

from models.seed.ulw_entry import Design, evaluate_design, export_design, quantize_design, render, run


def _build():
    from models.seed.masleepnet import MASleepNetStreaming

    return MASleepNetStreaming()


def _arch(model) -> dict:
    return model.net.cfg.to_dict()


def _complexity() -> dict:
    from models.seed.masleepnet import complexity

    return complexity()


DESIGN = Design(
    name="masleepnet",
    model_id="masleepnet-synthetic-v1",
    stem="masleepnet",
    title="MASleepNet",
    build=_build,
    arch=_arch,
    complexity=_complexity,
    steps=120,
    quick_steps=2,
    batch=4,
    crop_epochs=40,
    lr=2e-3,
    source="models.seed.masleepnet",
    keep_float=(),
    about=(
        "MASleepNet (Wang et al., Biomimetics 2025) has no public code; `models/seed/masleepnet.py` rebuilds "
        "it from the paper's description, details inferred and marked so: per modality (EEG with its two "
        "derivations, EOG, EMG) a multi-scale CNN (short branch kernel 50, long branch kernel 400, "
        "squeeze-and-excitation in each), squeeze-and-excitation attention fusing the modalities, attention "
        "pooling over the time steps of the epoch, an LSTM across epochs and a linear classifier. The "
        "published form's BiLSTM reads future epochs of its sequence and cannot run live; the streaming form "
        "shipped here replaces it with a unidirectional LSTM whose state (h, c) edged carries from epoch to "
        "epoch (manifest `state`), and uses narrower convolutions (16/32 filters instead of 64/128, "
        "`STREAMING` in the module) to fit the one-core training budget. Trained on crops of 40 consecutive "
        "epochs from the zero state; scored live from the zero state at the start of the stream. In the int8 "
        "model the convolutions and linear layers run in int8; the LSTM, the softmax and sigmoid gates and "
        "the GELUs stay float32."
    ),
    published=("Published: Sleep-EDF-20 84.53 % and Sleep-EDF-78 82.56 % accuracy (paper, real data, not "
               "reproduced here); the paper gives no parameter or operation count, so the published-form "
               "figures above are those of this reconstruction."),
)

DATA = None  # trained on its synthetic generator unless --data names a Sleep-EDF directory
SHIPPED = "shipped/masleepnet.json"
CARD = ("models.seed.masleepnet_entry:render_card", "work/masleepnet/masleepnet.report.json", "cards/masleepnet.md")


def train(data, out, *, quick=False, seed=0, work=None, command="") -> dict:
    return run(DESIGN, data, out, quick=quick, seed=seed, work=work, command=command)


def evaluate(data, *, quick=False, seed=0, work=None) -> dict:
    return evaluate_design(DESIGN, data, quick=quick, seed=seed, work=work)


def export(work, out) -> Path:
    return export_design(DESIGN, work, out)


def quantize(manifest, *, data=None, out) -> Path:
    return quantize_design(DESIGN, manifest, data=data, out=out)


def render_card(report: dict) -> str:
    return render(DESIGN, report)
