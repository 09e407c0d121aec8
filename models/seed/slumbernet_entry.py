"""``python -m models train slumbernet`` (the published SlumberNet) and, through
:mod:`models.seed.slumbernet_lite_entry`, ``slumbernet-lite`` (the edge variant): mouse EEG + EMG ->
W/NREM/REM per 4-s epoch.

Without ``--data`` both train on :mod:`models.seed.synthetic_mouse` (no labelled mouse recordings exist
here) and ship ``"synthetic": true``. With ``--data DIR`` holding SlumberNet's Zenodo files
(``<stem>-256Hz.txt`` + ``<stem>...sco.txt``, read by :mod:`models.datasets.mouse`) the same recipe trains
and evaluates on real recordings, by animal (file stem, the public set does not name animals).
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.seed import recipe as r
from models.seed import slumbernet as arch
from models.seed import synthetic_mouse as gen

DATA = None
SHIPPED = "shipped/slumbernet.json"
GEN_FS = 256.0
INPUTS = [
    {"name": "eeg", "signal": "eeg", "fs": arch.FS, "units": "mV"},
    {"name": "emg", "signal": "emg", "fs": arch.FS, "units": "mV", "band": list(arch.EMG_BAND)},
]


def _prepare(name: str, subject: str, eeg: tuple[float, np.ndarray], emg: tuple[float, np.ndarray],
             labels: np.ndarray) -> r.Prepared:
    n = len(labels)
    e = r.epochs_of(r.filtered_signal(eeg[1], eeg[0], arch.FS, arch.EEG_BAND), arch.SAMPLES, n)
    m = r.epochs_of(r.filtered_signal(emg[1], emg[0], arch.FS, arch.EMG_BAND), arch.SAMPLES, n)
    return r.Prepared(name, subject, [e, m], np.asarray(labels, np.int64))


@functools.lru_cache(maxsize=6)
def _synthetic(seeds: tuple[int, ...], minutes: float) -> list[r.Prepared]:
    out = []
    for s in seeds:
        rec = gen.generate(s, minutes=minutes, fs=GEN_FS)
        out.append(_prepare(f"synthetic-{s}", f"generated-{s}", (rec.fs, rec.eeg), (rec.fs, rec.emg), rec.states))
    return out


def _real(data: Path, quick: bool) -> list[r.Prepared]:
    from models.datasets import mouse

    files = sorted(Path(data).glob("*-256Hz.txt"))[: 2 if quick else None]
    if not files:
        raise FileNotFoundError(f"{data}: no SlumberNet <stem>-256Hz.txt files")
    out = []
    for f in files:
        night = mouse.load_slumbernet(f)
        out.append(_prepare(night.record, night.subject, night.signals["eeg"], night.signals["emg"], night.labels))
    return out


def _augment(signals: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """SlumberNet's amplitude augmentation (EEG x0.7-1.3, EMG x0.95-1.05) plus a joint gain of x0.5-2, so
    that an amplifier's different scale is not a different state."""
    eeg, emg = signals
    b = eeg.shape[0]
    joint = np.exp(rng.uniform(np.log(0.5), np.log(2.0), (b, 1, 1)))
    return [eeg * joint * rng.uniform(0.7, 1.3, (b, 1, 1)), emg * joint * rng.uniform(0.95, 1.05, (b, 1, 1))]


def make_recipe(lite: bool) -> r.Recipe:
    minutes = 60.0
    return r.Recipe(
        name="slumbernet-lite" if lite else "slumbernet",
        model_id="slumbernet-lite-synthetic-v1" if lite else "slumbernet-synthetic-v1",
        stem="slumbernet_lite" if lite else "slumbernet",
        description=(
            ("SlumberNet-lite, the edge variant: EEG+EMG at 64 Hz as two channels of a strided depthwise-separable "
             "1-D ResNet" if lite else
             "SlumberNet as published: (256 x 2) EEG+EMG epoch as an image, 7-block 2-D ResNet (8..256 maps), no striding")
            + "; per-epoch line detrend in the graph -> W/NREM/REM per 4-s epoch. Weights trained on SYNTHETIC signals."
        ),
        classes=arch.CLASSES,
        epoch_seconds=arch.EPOCH_SECONDS,
        inputs=INPUTS,
        build=(lambda: arch.SlumberNetLite(arch.LITE)) if lite else (lambda: arch.SlumberNet(arch.PUBLISHED)),
        arch=asdict(arch.LITE if lite else arch.PUBLISHED),
        synthetic_nights=lambda seeds, quick: _synthetic(tuple(seeds), 4.0 if quick else (minutes if lite or len(seeds) > 1 else 20.0)),
        real_nights=_real,
        synthetic_data=("models.seed.synthetic_mouse (documented generator: EEG + EMG at 256 Hz, 60-min recordings, "
                        "wake / NREM / REM bouts with the state rules in its docstring)"),
        real_data="SlumberNet mouse EEG/EMG (Zenodo 10.5281/zenodo.7899654) via models.datasets.mouse",
        fit=r.Fit(steps=500, lr=3e-3, warmup=20) if lite else r.Fit(steps=40, lr=2e-3, warmup=5),
        quick_fit=r.Fit(steps=5, lr=3e-3, warmup=1) if lite else r.Fit(steps=2, lr=2e-3, warmup=1),
        crop=1,
        batch=64 if lite else 16,
        train_seeds=tuple(range(0, 8)),
        eval_seeds=(1000,),
        quick_seeds=(0, 1),
        augment=_augment,
        calib_epochs=512 if lite else 128,
        check_epochs=200 if lite else 100,
    )


RECIPE = make_recipe(lite=False)


def train(data, out, *, quick=False, seed=0, work=None, command="", recipe: r.Recipe = RECIPE):
    report = r.train_recipe(recipe, data, Path(out), quick=quick, seed=seed, work=work, command=command)
    if not quick:
        report["real_recording"] = real_recording_check(Path(out) / report["manifest"], recipe)
        import json

        work = Path(work) if work is not None else Path(out) / "work"
        (work / f"{recipe.stem}.report.json").write_text(json.dumps(report, indent=2) + "\n")
        from models.seed import cards

        cards.write(recipe.name, report)
    return report


def mouse_npz(path: Path) -> Path:
    """The real 10-min MiSleep recording (``EEG_P``, ``EMG_DIFF`` at 305 Hz, mV) as an NPZ edged replays."""
    from models.datasets import data_root
    from models.datasets.mouse import read_misleep_mat

    channels = read_misleep_mat(data_root() / "mouse-eeg-emg" / "10mins_example_mat.mat")
    (fs, eeg), (_, emg) = channels["EEG_P"], channels["EMG_DIFF"]
    np.savez(path, eeg=np.asarray(eeg, np.float64), emg=np.asarray(emg, np.float64), fs=float(fs))
    return Path(path)


def real_recording_check(manifest: Path, recipe: r.Recipe = RECIPE) -> dict:
    """The shipped model on the real, unlabelled 10-min mouse recording (the published net on its first
    3 minutes: 0.9 GMAC per epoch)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = mouse_npz(Path(tmp) / "mouse.npz")
        seconds = None if recipe.name == "slumbernet-lite" else 180.0
        check = r.score_real_recording(manifest, path, {}, seconds=seconds)
    return dict(check, recording="mouse-eeg-emg/10mins_example_mat.mat", what=("10 min" if seconds is None else "the first 3 min of 10 min")
                + " of parietal EEG + neck EMG at 305 Hz (MiSleep example), unlabelled")


def evaluate(data, *, quick=False, seed=0, work=None, recipe: r.Recipe = RECIPE):
    return r.evaluate_recipe(recipe, data, quick=quick, seed=seed)


def export(work, out, recipe: r.Recipe = RECIPE):
    return r.export_recipe(recipe, Path(work), Path(out))


def quantize(manifest, *, data=None, out, work=None, recipe: r.Recipe = RECIPE):
    work = Path(work) if work is not None else Path(__file__).resolve().parents[1] / "work" / recipe.name
    return r.quantize_recipe(recipe, Path(manifest), data=data, out=Path(out), work=work)


CARD = ("models.seed.cards:render_slumbernet", "work/slumbernet/slumbernet.report.json", "cards/slumbernet.md")
