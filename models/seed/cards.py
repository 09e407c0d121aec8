"""Model cards of WatchSleepNet, SleepVST, SlumberNet and SlumberNet-lite, rendered from the report their
training run wrote (``python -m models card <name>`` re-renders one without retraining). Every figure in a
card comes from that report or from the architecture's ``complexity()``; nothing is typed in by hand."""

from __future__ import annotations

import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
CARD_FILES = {"watchsleepnet": "watchsleepnet.md", "sleepvst": "sleepvst.md", "slumbernet": "slumbernet.md",
              "slumbernet-lite": "slumbernet-lite.md"}


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _scores_table(s: dict, classes: list[str]) -> str:
    rows = ["| kappa | accuracy | macro F1 | " + " | ".join(f"F1 {c}" for c in classes) + " | epochs |",
            "|---|---|---|" + "---|" * len(classes) + "---|",
            f"| {_f(s['kappa'])} | {_f(s['accuracy'])} | {_f(s['macro_f1'])} | "
            + " | ".join(_f(s["f1"].get(c)) for c in classes) + f" | {s['epochs']} |"]
    conf = s.get("confusion")
    if conf:
        rows += ["", "Confusion (rows: reference, columns: predicted, order " + " / ".join(classes) + "):", "",
                 "```", *("  ".join(f"{v:6d}" for v in row) for row in conf), "```"]
    return "\n".join(rows)


def _complexity(name: str) -> str:
    if name == "watchsleepnet":
        from models.seed.watchsleepnet import complexity

        c = complexity()
        labels = {"published": "published (offline, whole night; MACs per epoch of a 960-epoch night)",
                  "streaming": "streaming, published widths", "edge": "streaming, shipped widths"}
    elif name == "sleepvst":
        from models.seed.sleepvst import complexity

        c = complexity()
        labels = {"published": "published (240-epoch window, bidirectional; per epoch = window / 240)",
                  "streaming": "streaming, published widths (KV cache)", "edge": "streaming, shipped widths"}
    else:
        from models.seed.slumbernet import complexity

        c = complexity()
        labels = {"published": "published SlumberNet (MACs on real taps)", "lite": "SlumberNet-lite (edge)"}
    rows = ["| form | parameters | MACs per epoch |", "|---|---|---|"]
    rows += [f"| {labels[k]} | {v['parameters']:,} | {v['macs_per_epoch']:,} |" for k, v in c.items()]
    return "\n".join(rows) + f"\n\n(`python -c \"import models.seed.{'slumbernet' if 'slumber' in name else name} as m; print(m.complexity())\"`)"


TEXT = {
    "watchsleepnet": {
        "title": "WatchSleepNet, causal (`watchsleepnet`)",
        "design": (
            "WatchSleepNet (Wang et al., CHIL 2025) reads inter-beat intervals as a 25-Hz sample-and-hold signal "
            "(750 samples per 30-s epoch, 0 = missing) and outputs W / NREM / REM. The published network "
            "(ResNet epoch encoder, TCN with symmetric padding, 4-layer bidirectional LSTM, self-attention over "
            "the whole night) sees the future and cannot run live. edged runs the streaming form "
            "(`models/seed/watchsleepnet.py`): the same encoder design, the TCN padded on the left only with its "
            "past inputs as state, a unidirectional LSTM whose hidden and cell state are ONNX inputs/outputs, and "
            "attention over the last 16 epochs with a key/value cache. The daemon carries the state between "
            "epochs (`state` in the manifest); one call scores one epoch. The shipped widths are narrowed (see "
            "the table) so that leave-one-subject-out training fits a one-core budget, and the shipped form adds "
            "what the paper does not have (`epoch_stats`): each epoch's log mean interval and log variability "
            "against a running baseline of the night so far (carried as the `baseline` state), and the encoder "
            "reads beat-to-beat deviations relative to the epoch mean instead of raw seconds, because a dozen "
            "training nights cannot teach a network every subject's resting heart rate."),
        "real": (
            "The weights are trained on REAL data: the MIT-BIH Polysomnographic Database beat-by-beat RR "
            "(`../shared/data/ibi-sleep-slpdb`, loader `models.ibi.data`, the shipped `ibi-slpdb` model's), "
            "slp61 held out. The published recipe pretrains on SHHS ECG-IBI + MESA PPG-IBI and fine-tunes on "
            "DREAMT wrist PPG; loaders for those formats exist (`models/datasets/nsrr.py`, `dreamt.py`) but this "
            "recipe does not read them yet: turning their beats into the same IBI input is the missing step."),
    },
    "sleepvst": {
        "title": "SleepVST, causal (`sleepvst`)",
        "design": (
            "SleepVST stages W / Light (N1+N2) / Deep (N3) / REM from the ECG and a thoracic respiration belt. "
            "Inputs (both built live by edged's generic raw-channel path, `FilteredSignal` in `edged/pipeline.py`, "
            "whose batch twin builds the training inputs): the ECG band-passed 0.66-2.8 Hz into a pulse-like wave "
            "at 10 Hz (300 samples per epoch), the belt band-passed 0.1-1 Hz at 5 Hz (150 samples); each 30-s "
            "patch is z-scored inside the graph. Published: two ResNet waveform encoders and a 6-layer pre-LN "
            "transformer over a 240-epoch (2-h) window, attending in both directions. Streaming form "
            "(`models/seed/sleepvst.py`): each epoch encoded once, causal attention over the newest 240 epochs "
            "with per-layer key/value caches as ONNX state, ALiBi distance penalties instead of absolute "
            "positions. The median filter (k5) of the published preprocessing is left out."),
        "real": (
            "With NSRR SHHS or MESA nights (EDF + `-nsrr.xml`, loader `models/datasets/nsrr.py`, channels "
            "`ECG`/`EKG` and `THOR RES`/`Thor`): `python -m models train sleepvst --data DIR --out models/shipped` "
            "trains and evaluates subject-wise with this same recipe. It is wired but has not been run: no such "
            "nights exist on this machine."),
    },
    "slumbernet": {
        "title": "SlumberNet, as published (`slumbernet`)",
        "design": (
            "SlumberNet (Sci Rep 2024) scores mouse EEG + EMG in 4-s epochs at 64 Hz (256 x 2) with a 7-block 2-D "
            "ResNet (feature maps 8 doubling to 256, kernels (2, 8/5/3), no striding), W / NREM / REM. It is "
            "causal by construction (one epoch, no context). Reconstructed in `models/seed/slumbernet.py`; the "
            "parameter count differs from the brief's 5.34 M (Supplementary Table S1 was not available), the "
            "effective cost (~0.9 GMAC per epoch) matches. Too heavy for many cages per Pi: see "
            "`slumbernet-lite`. Within the one-core training budget the published network sees only a few hundred "
            "epochs (see Reproduce), far fewer than the lite variant, and it shows in its figures below. Inputs: EEG unfiltered, EMG band-passed 0.5-25 Hz, both resampled to 64 Hz by "
            "edged's raw-channel path; a least-squares line is removed per epoch inside the graph."),
        "real": (
            "With SlumberNet's Zenodo set (10.5281/zenodo.7899654: `<stem>-256Hz.txt` + `<stem>...sco.txt`, loader "
            "`models/datasets/mouse.py`): `python -m models train slumbernet --data DIR --out models/shipped`. "
            "Wired, not run: the set cannot be downloaded here. Folds are by file stem (the public set does not "
            "name animals)."),
    },
    "slumbernet-lite": {
        "title": "SlumberNet-lite, the edge variant (`slumbernet-lite`)",
        "design": (
            "A lighter SlumberNet for a Pi serving many cages (`SlumberNetLite` in `models/seed/slumbernet.py`): "
            "EEG and EMG as two channels of a 1-D network, a strided stem and four depthwise-separable residual "
            "stages halving time (256 -> 8), global average pool, dense 3. Same inputs, preprocessing and "
            "classes as `slumbernet`; causal by construction (one 4-s epoch)."),
        "real": (
            "`python -m models train slumbernet-lite --data DIR --out models/shipped` with SlumberNet's Zenodo set "
            "(loader `models/datasets/mouse.py`). Wired, not run: the set cannot be downloaded here."),
    },
}


def render(name: str, report: dict) -> str:
    t = TEXT[name]
    m = report["manifest_body"]
    classes = m["classes"]
    synthetic = report["synthetic"]
    lines = [f"# {t['title']}", ""]
    if synthetic:
        lines += ["> **The shipped weights were trained on SYNTHETIC signals** from a documented generator "
                  f"(`{m['training']['data'].split(' ')[0]}`), not on recordings. The manifest says "
                  "`\"synthetic\": true` and every stage message it produces carries `synthetic: true`. "
                  "Do not use its stages as sleep stages; the figures below check the generator and the "
                  "training path, they are NOT an accuracy.", ""]
    lines += ["## What it is", "", t["design"], "",
              f"Model id `{m['id']}`, files `models/shipped/{m['onnx']}` + `models/shipped/{report['manifest']}`.", "",
              "| input | signal | rate | band | units |", "|---|---|---|---|---|"]
    for i in m["inputs"]:
        lines.append(f"| `{i['name']}` | {i['signal']} | {i['fs']:g} Hz | {i.get('band') or '-'} | {i['units']} |")
    lines += ["", f"Classes {' / '.join(classes)}; epoch {m['epoch_seconds']:g} s; context 1 epoch per call with "
              f"{len(m['state'])} state tensors carried between calls; look-ahead {m['lookahead_epochs']}.", "",
              "## Complexity", "", _complexity(name), "",
              "## Training data", "", f"{m['training']['data']}.", ""]
    ev = report.get("evaluation")
    lines += ["## Measured", ""]
    if ev:
        lines += [f"Protocol: {ev['protocol']}.", "", _scores_table(ev, classes), ""]
        if synthetic:
            lines += ["These numbers only say that the network learns the generator's rules (a high score means "
                      "the rules are easy to separate); they say nothing about real recordings, where these "
                      "weights have never been measured.", ""]
        if ev.get("folds"):
            lines += ["Per fold: " + "; ".join(f"{'+'.join(f['subjects'])} kappa {_f(f['kappa'])}" for f in ev["folds"]), ""]
    ho = report.get("held_out")
    if ho:
        lines += [f"Held-out night {ho['record']} (never trained on), the shipped int8 graph streamed epoch by "
                  "epoch with its state:", "", _scores_table(ho, classes), ""]
        iv = ho.get("int8_vs_float")
        if iv:
            lines += [f"On that night int8 and float agree on {iv['agreement'] * 100:.2f} % of epochs; accuracy "
                      f"float {iv['accuracy_float']:.4f}, int8 {iv['accuracy_int8']:.4f} (the goal, >= 99 % agreement "
                      "and <= 1 point of accuracy, is "
                      + ("met" if iv["agreement"] >= 0.99 and (iv["accuracy_float"] - iv["accuracy_int8"]) * 100 <= 1.0
                         else "**not met** on this night") + ").", ""]
    if name == "watchsleepnet" and ev and not synthetic:
        lines += ["Beside it, on the same slpdb data (issue 5's table and the shipped `ibi-slpdb` card): LightGBM "
                  "on causal HRV features kappa 0.25 / accuracy 0.62; `ibi-slpdb-causal-v1` kappa 0.388 / accuracy "
                  "0.691 / REM F1 0.023 (LOSO). The project goal (kappa >= 0.45 with REM F1 >= 0.40) is "
                  + ("met." if (ev["kappa"] or 0) >= 0.45 and (ev["f1"].get("REM") or 0) >= 0.40 else "**not met**.")
                  + (" This model does **not** beat its gradient-boosting peer (kappa 0.25) nor `ibi-slpdb`; "
                     "it never finds REM." if (ev["kappa"] or 0) < 0.25 else "")
                  + " Those peers were not re-run in this training run.", ""]
    real = report.get("real_recording")
    if real:
        counts = ", ".join(f"{c} {n}" for c, n in real["stages"].items())
        lines += [f"On a real, unlabelled recording ({real['recording']}: {real['what']}), replayed through edged's "
                  f"pipeline into the shipped int8 model: {real['epochs']} epochs scored as {counts}. "
                  + "There are no labels to score this against; "
                  + "it shows how far the generator's rules carry over to real signals, and is no accuracy.", ""]
    p = report["parity"]
    lines += ["## int8", "", f"{m['quantization']}: {m['quantization_detail']}", "",
              f"Parity on {p['epochs']} epochs of {'generated' if synthetic else 'training'} recordings, streamed "
              f"epoch by epoch with the state carried: PyTorch vs ONNX float argmax agreement {p['torch_vs_float']:.4f}, "
              f"ONNX float vs int8 {p['float_vs_int8']:.4f} (largest probability difference "
              f"{p['max_abs_probability_diff_int8']})."]
    lines += ["", "## Reproduce", "", "```sh", report["command"] or f"python -m models train {name} --out models/shipped", "```", "",
              f"Wall time of that run: {report['wall_seconds']:.0f} s on one CPU thread (a shared 2-core VM with other engineers' training jobs running), "
              f"of which the final fit {report['fit']['seconds']:.0f} s ({report['fit']['steps']} steps).", "",
              "## Training on real data", "", t["real"], ""]
    return "\n".join(lines)


def write(name: str, report: dict, path: Path | None = None) -> Path:
    path = Path(path) if path is not None else PACKAGE / "cards" / CARD_FILES[name]
    path.write_text(render(name, report))
    return path


def render_watchsleepnet(report: dict) -> str:
    return render("watchsleepnet", report)


def render_sleepvst(report: dict) -> str:
    return render("sleepvst", report)


def render_slumbernet(report: dict) -> str:
    return render("slumbernet", report)


def render_slumbernet_lite(report: dict) -> str:
    return render("slumbernet-lite", report)


def from_report(name: str, report_path: Path) -> str:
    return render(name, json.loads(Path(report_path).read_text()))
