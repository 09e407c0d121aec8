"""Sleep-staging accuracy of edged's real-data models beside their peers, on the same subject-wise folds.

    python benchmarks/accuracy.py [--only slpdb,walch,sleep-edf] [--evaluate] [--json PATH]

Everything below is re-run in this one command on the real labelled data in ../shared/data; nothing is
asserted, figures are printed (pooled over folds: every test epoch of every fold scored once).

Peers, each with the folds our models are evaluated on:

* slpdb, W/NREM/REM: LightGBM on causal HRV features (time-domain over the last 1, 3 and 5 min, LF/HF over
  the last 5 min, all from edged.dsp.hrv, plus the 5-min heart rate relative to the night so far).
  Leave-one-subject-out over the 12 training subjects (slp01a/b and slp02a/b are one subject each), slp61
  held out: a final peer trained on all 14 training records scores it, as the shipped model does.
* slpdb: sleepecg's bundled ``wrn-gru-mesa`` (trained on MESA, bidirectional GRU over the whole night, so
  offline) on the same epochs, when a Python with sleepecg and TensorFlow is given (``--sleepecg-python``).
* Walch (Apple Watch heart rate), W/NREM/REM: LightGBM on causal heart-rate features (statistics of the
  readings over the last 1 to 30 min, also relative to the night so far: :func:`walch_features`) + elapsed
  time since the PSG start; folds from ``models.datasets.walch.loso_folds``.
* Walch: the study's own per-epoch features (``features/``: activity count, heart rate, clock proxies;
  computed with the whole night, so NOT causal) with LightGBM and with logistic regression.
* Sleep-EDF-20, five stages, each night cropped to 30 min before the first / after the last sleep epoch:
  LightGBM on the data set's columns 0-17 plus their causal context over 3 and 5 epochs (first difference,
  trailing mean and SD); folds from ``models.eeg.data.loso_folds``.

Ours: every registered model whose data set is one of these and that has a shipped, real-data manifest,
with the figures its manifest publishes (measured by its training run on these folds), or re-evaluated
now through its entry module with ``--evaluate`` (retrains every fold: slow).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.datasets import data_root  # noqa: E402
from models.metrics import scores  # noqa: E402
from models.registry import MODELS  # noqa: E402

DATA = data_root()
SLPDB, WALCH, SLEEP_EDF = DATA / "ibi-sleep-slpdb", DATA / "hr-sleep-walch", DATA / "eeg-features-sleepedf"
# Registered models are matched to a data set by their entry module's DATA (folder under the data root).
DATASETS = {"slpdb": "ibi-sleep-slpdb", "walch": "hr-sleep-walch", "sleep-edf": "eeg-features-sleepedf"}
CLASSES_3 = ("W", "NREM", "REM")
CLASSES_5 = ("W", "N1", "N2", "N3", "REM")
SEED = 0
SLEEPECG_VENV = Path("/tmp/sleepecg-venv/bin/python")


def lightgbm(seed: int = SEED):
    try:
        import lightgbm as lgb
    except ImportError:
        raise SystemExit("the peers need LightGBM: pip install 'edged[bench]'") from None
    # One thread: the machine is shared, and the figures must not depend on how many cores it has.
    # Small trees with large leaves: the test subject is always unseen, so fitting subject quirks only hurts.
    return lgb.LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=100,
                              subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                              n_jobs=1, verbose=-1)


def logistic():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _fit_predict(make: Callable, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int) -> np.ndarray:
    keep = y_train >= 0
    model = make()
    model.fit(x_train[keep], y_train[keep])
    proba = np.zeros((len(x_test), k))
    proba[:, model.classes_] = model.predict_proba(x_test)  # a class absent from training gets 0
    return proba.argmax(1)


def cross_validate(folds: list[tuple[str, list, list]], features: Callable, make: Callable, classes) -> dict:
    """``folds``: (held-out subject, training items, test items); ``features(item)`` -> (X, y, scored mask).
    Pooled scores over every fold's scored test epochs, plus the per-fold kappa mean and SD."""
    cache: dict[int, tuple] = {}

    def get(item):
        key = item if isinstance(item, str) else id(item)
        if key not in cache:
            cache[key] = features(item)
        return cache[key]

    ys, ps, kappas = [], [], []
    for _, train, test in folds:
        tr = [get(i) for i in train]
        x_tr = np.concatenate([x[m] for x, _, m in tr])
        y_tr = np.concatenate([y[m] for _, y, m in tr])
        te = [get(i) for i in test]
        x_te = np.concatenate([x[m] for x, _, m in te])
        y_te = np.concatenate([y[m] for _, y, m in te])
        p = _fit_predict(make, x_tr, y_tr, x_te, len(classes))
        ys.append(y_te)
        ps.append(p)
        s = scores(y_te, p, classes)
        if s["kappa"] is not None:
            kappas.append(s["kappa"])
    pooled = scores(np.concatenate(ys), np.concatenate(ps), classes)
    pooled["fold_kappa_mean"] = round(float(np.mean(kappas)), 4)
    pooled["fold_kappa_sd"] = round(float(np.std(kappas, ddof=1)), 4) if len(kappas) > 1 else None
    pooled["folds"] = len(folds)
    return pooled


# ----------------------------------------------------------------------------------------------- slpdb


def slpdb_features(night) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Causal HRV features per epoch: everything from beats before the epoch's end."""
    from edged.dsp.hrv import epoch_features

    beats, n = night.beats, night.n_epochs
    columns = []
    for window in (60.0, 180.0, 300.0):
        # Spectral features are taken from the 5-min window only; shorter windows skip the long periodogram.
        rows = [epoch_features(beats, (k + 1) * 30.0 - window, window, window) for k in range(n)]
        names = ("hr_mean_bpm", "sdnn_ms", "rmssd_ms", "pnn50_pct", "valid_share")
        if window == 300.0:
            names += ("lf_ms2", "hf_ms2", "lf_hf")
        for name in names:
            v = np.array([r[name] for r in rows])
            columns.append(np.log1p(v) if name in ("lf_ms2", "hf_ms2") else v)
    hr5 = columns[10]
    so_far = np.array([np.nanmean(hr5[: k + 1]) if np.isfinite(hr5[: k + 1]).any() else np.nan for k in range(n)])
    columns.append(hr5 / so_far)
    return np.column_stack(columns), night.labels, night.labels >= 0


def slpdb_peer(results: list[dict], args: argparse.Namespace) -> None:
    from models.datasets import slpdb

    t0 = time.monotonic()
    nights = slpdb.load_nights(SLPDB, exclude=(slpdb.HELD_OUT,))
    held = slpdb.load_night(SLPDB / f"{slpdb.HELD_OUT}.rr")
    subjects = sorted({n.subject for n in nights})
    folds = [(s, [n for n in nights if n.subject != s], [n for n in nights if n.subject == s]) for s in subjects]
    cv = cross_validate(folds, slpdb_features, lightgbm, CLASSES_3)
    x_tr = np.concatenate([slpdb_features(n)[0] for n in nights])
    y_tr = np.concatenate([n.labels for n in nights])
    xh, yh, mh = slpdb_features(held)
    held_scores = scores(yh[mh], _fit_predict(lightgbm, x_tr, y_tr, xh[mh], 3), CLASSES_3)
    protocol = f"LOSO over {len(subjects)} subjects ({len(nights)} records), slp61 held out"
    results.append(_row("slpdb", "LightGBM, causal HRV features (1/3/5 min)", cv, protocol, t0,
                        held_out=held_scores))
    sleepecg_peer(results, args, nights, held)


def sleepecg_peer(results: list[dict], args: argparse.Namespace, nights, held) -> None:
    python = args.sleepecg_python
    name = "sleepecg wrn-gru-mesa (bundled, bidirectional: offline)"
    if python is None or not Path(python).exists():
        results.append({"data": "slpdb", "method": name, "note": (
            "NOT RUN: it needs TensorFlow, which edged does not install; give --sleepecg-python PATH to a Python "
            "with `pip install sleepecg tensorflow-cpu` (a throwaway venv)")})
        return
    t0 = time.monotonic()
    # What sleepecg's own slpdb reader gives it: beat times and the recording's clock start (.hea line 1).
    payload = {"nights": [{"record": n.record, "beats": n.beats.tolist(), "n_epochs": n.n_epochs,
                           "start": (SLPDB / f"{n.record}.hea").read_text().split()[4]}
                          for n in [*nights, held]]}
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([python, "-c", SLEEPECG_SCRIPT], input=json.dumps(payload), capture_output=True,
                          text=True, check=False, env=env)
    if proc.returncode != 0:
        results.append({"data": "slpdb", "method": name, "note": "FAILED: " + proc.stderr.strip()[-400:]})
        return
    predicted = json.loads(proc.stdout.strip().splitlines()[-1])
    y = np.concatenate([n.labels for n in nights])
    p = np.concatenate([np.asarray(predicted[n.record]) for n in nights])
    cv = scores(y, p, CLASSES_3)
    held_scores = scores(held.labels, np.asarray(predicted[held.record]), CLASSES_3)
    results.append(_row("slpdb", name, cv, "pretrained on MESA: every epoch of the 14 training records", t0,
                        held_out=held_scores))


# Runs inside the sleepecg Python: beat times in, W/NREM/REM class per epoch out. The classifier's outputs
# are (UNDEFINED, NREM, REM, WAKE) probabilities; an epoch is given the likeliest real stage, and the
# epochs after the last whole epoch it scores (the record's last seconds) repeat its last answer.
SLEEPECG_SCRIPT = r"""
import json, sys, datetime
import numpy as np
import sleepecg
data = json.load(sys.stdin)
clf = sleepecg.load_classifier("wrn-gru-mesa", "SleepECG")
assert clf.stages_mode == "wake-rem-nrem", clf.stages_mode
out = {}
for night in data["nights"]:
    h, m, s = (int(float(x)) for x in night["start"].split(":"))
    rec = sleepecg.SleepRecord(sleep_stage_duration=30, recording_start_time=datetime.time(h, m, s),
                               heartbeat_times=np.asarray(night["beats"]))
    prob = np.asarray(sleepecg.stage(clf, rec, return_mode="prob"))
    assert prob.shape[1] == 4, prob.shape  # UNDEFINED, NREM, REM, WAKE
    pred = np.array([1, 2, 0])[prob[:, 1:4].argmax(1)]  # NREM, REM, WAKE -> edged W 0, NREM 1, REM 2
    pred = pred[: night["n_epochs"]].tolist()
    pred += pred[-1:] * (night["n_epochs"] - len(pred))
    out[night["record"]] = pred
print(json.dumps(out))
"""


# ----------------------------------------------------------------------------------------------- Walch


def walch_features(subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Causal watch heart-rate features per epoch (readings before the epoch's end only) + elapsed time.

    Over the last 1, 3, 5, 10, 20 and 30 min: mean, SD, min, max, count, mean absolute change, and the mean
    and SD relative to the night so far; plus the time since the last reading."""
    from models.datasets import stage_labels
    from models.datasets.walch import night_readings

    times, bpm, stages = night_readings(WALCH, subject)
    keep = times >= 0
    times, bpm = times[keep], bpm[keep]
    labels = stage_labels(stages, "3-stage")
    n = len(labels)
    ends = (np.arange(n) + 1) * 30.0
    hi = np.searchsorted(times, ends)  # readings before each epoch's end
    csum = np.concatenate([[0.0], np.cumsum(bpm)])
    csq = np.concatenate([[0.0], np.cumsum(bpm**2)])
    absdiff = np.concatenate([[0.0, 0.0], np.cumsum(np.abs(np.diff(bpm)))])
    columns = [ends / 3600.0]
    with np.errstate(invalid="ignore", divide="ignore"):
        so_far = csum[hi] / hi
        sd_so_far = np.sqrt(np.maximum(csq[hi] / hi - so_far**2, 0.0))
        for window in (60.0, 180.0, 300.0, 600.0, 1200.0, 1800.0):
            lo = np.searchsorted(times, ends - window)
            count = hi - lo
            mean = (csum[hi] - csum[lo]) / count
            sd = np.sqrt(np.maximum((csq[hi] - csq[lo]) / count - mean**2, 0.0))
            change = (absdiff[hi] - absdiff[np.minimum(lo + 1, hi)]) / np.maximum(count - 1, 1)
            mins = np.array([bpm[a:b].min() if b > a else np.nan for a, b in zip(lo, hi)])
            maxs = np.array([bpm[a:b].max() if b > a else np.nan for a, b in zip(lo, hi)])
            columns += [mean, sd, mins, maxs, count.astype(float), change, (mean - so_far) / sd_so_far,
                        mean / so_far, sd / sd_so_far]
    columns.append(np.where(hi > 0, ends - times[np.maximum(hi - 1, 0)], np.nan))
    return np.column_stack(columns), labels, labels >= 0


STUDY_FEATURES = ("count", "hr", "time", "cosine", "circadian")


def walch_study_features(subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = WALCH / "features"
    x = np.column_stack([np.loadtxt(folder / f"{subject}_{f}_feature.out") for f in STUDY_FEATURES])
    raw = np.loadtxt(folder / f"{subject}_psg_labels.out").astype(int)
    labels = np.select([raw == 0, (raw >= 1) & (raw <= 4), raw == 5], [0, 1, 2], default=-1)
    return x, labels, labels >= 0


def walch_peers(results: list[dict], args: argparse.Namespace) -> None:
    from models.datasets.walch import loso_folds

    folds = [(s, train, [s]) for s, train in loso_folds(WALCH)]
    protocol = f"LOSO over {len(folds)} subjects"
    t0 = time.monotonic()
    cv = cross_validate(folds, walch_features, lightgbm, CLASSES_3)
    results.append(_row("walch", "LightGBM, causal watch-HR features + elapsed time", cv, protocol, t0))
    for name, make in (("LightGBM", lightgbm), ("logistic regression", logistic)):
        t0 = time.monotonic()
        cv = cross_validate(folds, walch_study_features, make, CLASSES_3)
        results.append(_row("walch", f"{name}, the study's features (count, HR, clock; not causal)", cv,
                            protocol, t0))


# ------------------------------------------------------------------------------------------- Sleep-EDF


def sleep_edf_features(night) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from edged.dsp.eeg_features import causal_context

    k = night.base.shape[1]
    three = causal_context(night.base, 3)  # [base, diff, mean3, sd3]
    five = causal_context(night.base, 5)[:, 2 * k :]  # [mean5, sd5]
    return np.concatenate([three, five], axis=1), night.labels, night.scored


def sleep_edf_peer(results: list[dict], args: argparse.Namespace) -> None:
    from models.eeg.data import loso_folds

    t0 = time.monotonic()
    folds = [(f.subject, f.train, f.test) for f in loso_folds(SLEEP_EDF)]
    cv = cross_validate(folds, sleep_edf_features, lightgbm, CLASSES_5)
    nights = sum(len(f[2]) for f in folds)
    results.append(_row("sleep-edf", "LightGBM, columns 0-17 + causal 3/5-epoch context", cv,
                        f"LOSO over {len(folds)} subjects ({nights} nights), cropped +-30 min", t0))


# ------------------------------------------------------------------------------------------------ ours


def _row(data: str, method: str, s: dict, protocol: str, t0: float | None = None, **extra) -> dict:
    row = {"data": data, "method": method, "protocol": protocol, **{k: s.get(k) for k in (
        "epochs", "kappa", "accuracy", "macro_f1", "f1", "confusion", "fold_kappa_mean", "fold_kappa_sd")}}
    if t0 is not None:
        row["seconds"] = round(time.monotonic() - t0, 1)
    row.update(extra)
    return row


def our_models(results: list[dict], args: argparse.Namespace, wanted: set[str]) -> None:
    from edged.scoring.manifest import load_manifest
    from models.__main__ import shipped_manifest

    by_folder = {folder: key for key, folder in DATASETS.items()}
    for name in sorted(MODELS):
        try:
            entry = importlib.import_module(MODELS[name])
        except Exception as exc:  # noqa: BLE001 - one broken entry must not hide the others
            results.append({"data": "?", "method": f"ours: {name}", "note": f"entry does not import: {exc}"})
            continue
        key = by_folder.get(getattr(entry, "DATA", None) or "")
        if key is None or key not in wanted:
            continue
        path, why = shipped_manifest(name)
        if path is None:
            results.append({"data": key, "method": f"ours: {name}", "note": f"no shipped model ({why})"})
            continue
        m = load_manifest(path)
        if m.synthetic:
            continue
        label = f"ours: {name} ({m.quantization})"
        held = m.metrics.get("held_out", {})
        held_scores = held.get("int8") if isinstance(held, dict) else None
        results.append(_row(key, label + ", from its manifest", m.metrics, m.metrics.get("protocol", ""),
                            **({"held_out": held_scores} if held_scores else {})))
        if args.evaluate:
            import tempfile

            t0 = time.monotonic()
            with tempfile.TemporaryDirectory() as work:
                s = entry.evaluate(DATA / entry.DATA, quick=False, seed=SEED, work=Path(work))
            results.append(_row(key, f"ours: {name}, re-evaluated now (float, retrained per fold)", s,
                                s.get("protocol", ""), t0))


# ----------------------------------------------------------------------------------------------- print


def _f(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def report(results: list[dict]) -> None:
    titles = {"slpdb": "slpdb (MIT-BIH Polysomnographic DB), W/NREM/REM", "walch": "Walch 2019 Apple Watch, W/NREM/REM",
              "sleep-edf": "Sleep-EDF-20 EEG features, 5 stages, cropped"}
    for data in ("slpdb", "walch", "sleep-edf"):
        rows = [r for r in results if r["data"] == data]
        if not rows:
            continue
        classes = CLASSES_5 if data == "sleep-edf" else CLASSES_3
        print(f"\n== {titles[data]}")
        head = f"{'method':68s} {'kappa':>6s} {'acc':>6s} {'mF1':>6s} " + " ".join(f"{c:>5s}" for c in classes)
        print(head + "   fold kappa    epochs  s")
        for r in rows:
            if "note" in r:
                print(f"{r['method']:68s} {r['note']}")
                continue
            f1 = r.get("f1") or {}
            sd = r.get("fold_kappa_sd")
            fold = f"{_f(r.get('fold_kappa_mean'))}+-{_f(sd)}" if r.get("fold_kappa_mean") is not None else ""
            print(f"{r['method'][:68]:68s} {_f(r['kappa']):>6s} {_f(r['accuracy']):>6s} {_f(r['macro_f1']):>6s} "
                  + " ".join(f"{_f(f1.get(c)):>5s}" for c in classes)
                  + f"   {fold:13s} {r.get('epochs') or '':>6} {r.get('seconds', '')}")
            if r.get("held_out"):
                h = r["held_out"]
                print(f"{'   held-out night slp61':68s} {_f(h['kappa']):>6s} {_f(h['accuracy']):>6s} "
                      f"{_f(h['macro_f1']):>6s} " + " ".join(f"{_f(h['f1'].get(c)):>5s}" for c in classes)
                      + f"   {'':13s} {h['epochs']:>6}")
        protocols = sorted({r["protocol"] for r in rows if r.get("protocol")})
        for p in protocols:
            print(f"   protocol: {p}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="slpdb,walch,sleep-edf", help="comma-separated data sets")
    ap.add_argument("--evaluate", action="store_true", help="also re-evaluate our models (retrains every fold)")
    ap.add_argument("--sleepecg-python", default=str(SLEEPECG_VENV) if SLEEPECG_VENV.exists() else None,
                    help="a Python with sleepecg + tensorflow for the wrn-gru-mesa peer "
                         f"(default: {SLEEPECG_VENV} when it exists)")
    ap.add_argument("--json", type=Path, help="also write every figure as JSON")
    args = ap.parse_args()
    wanted = set(args.only.split(","))
    unknown = wanted - set(DATASETS)
    if unknown:
        ap.error(f"unknown data set(s) {sorted(unknown)}; known: {', '.join(DATASETS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"edged accuracy benchmark: {platform.node()} {platform.machine()}, Python {platform.python_version()}, "
          f"data {DATA}, seed {SEED}")
    results: list[dict] = []
    t0 = time.monotonic()
    runners = {"slpdb": slpdb_peer, "walch": walch_peers, "sleep-edf": sleep_edf_peer}
    for key in DATASETS:
        if key not in wanted:
            continue
        t_data = time.monotonic()
        try:
            runners[key](results, args)
        except Exception as exc:  # noqa: BLE001 - one data set failing must not lose the others' figures
            results.append({"data": key, "method": "peers", "note": f"FAILED: {type(exc).__name__}: {exc}"})
        print(f"{key}: peers done in {time.monotonic() - t_data:.0f} s", flush=True)
    our_models(results, args, wanted)
    results.sort(key=lambda r: (r["data"], not r["method"].startswith("ours")))
    report(results)
    print(f"\n(total {time.monotonic() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
