"""The model card of the slpdb IBI stager, rendered from the run's report so that every number in it is
the number measured by the run that produced the shipped files."""

from __future__ import annotations

from models.ibi.data import CLASSES

GOAL_KAPPA = 0.45
GOAL_REM_F1 = 0.40


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _confusion_table(c: list[list[int]]) -> str:
    head = "| reference \\ predicted | " + " | ".join(CLASSES) + " |\n|---|" + "---:|" * len(CLASSES) + "\n"
    rows = "".join(f"| {name} | " + " | ".join(str(v) for v in row) + " |\n" for name, row in zip(CLASSES, c))
    return head + rows


def _scores_row(label: str, s: dict) -> str:
    f1 = s["f1"]
    return (
        f"| {label} | {s['epochs']} | {_f(s['kappa'])} | {_f(s['accuracy'])} | {_f(s['macro_f1'])} | "
        f"{_f(f1['W'])} | {_f(f1['NREM'])} | {_f(f1['REM'])} |\n"
    )


SCORES_HEAD = "| | epochs | kappa | accuracy | macro F1 | F1 W | F1 NREM | F1 REM |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"


def _ops(d: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in d.items()) or "none"


def render(report: dict) -> str:
    cv = report["loso"]["pooled"]
    held = report["held_out"]
    q = report["int8_vs_float"]
    arch = report["arch"]
    train = report["train"]
    shipped = held[report["shipped_variant"]]
    goal_met = (cv["kappa"] or 0) >= GOAL_KAPPA and (cv["f1"]["REM"] or 0) >= GOAL_REM_F1
    smoke = report.get("quick", False)
    minutes = arch["context"] * 30 / 60
    widths = [2, *arch["enc_channels"]]
    kernels = [10] + [arch["enc_kernel"]] * (len(widths) - 2)
    enc_params = sum(a * b * k + (0 if arch["batchnorm"] else b) for a, b, k in zip(widths, widths[1:], kernels))
    ops = report["quantized_ops"]
    last_try = report["quantization_attempts"][-1]

    fold_rows = "".join(
        _scores_row(f"{f['subject']} ({'+'.join(f['records'])})", f) for f in report["loso"]["folds"]
    )
    c = cv["confusion"]
    rem_called = sum(row[2] for row in c)
    rem_note = (
        f"\nREM is practically not detected: over all folds the model called {rem_called} of {cv['epochs']} "
        f"epochs REM, {c[2][2]} of them correctly, out of {cv['support']['REM']} reference REM epochs; the REM it\n"
        f"misses goes to W ({c[2][0]}) and NREM ({c[2][1]}). Heart rate alone separates REM poorly in these apneic "
        "nights:\nper record, the mean IBI in REM is above that in NREM in some records and below it in others.\n"
        if (cv["f1"]["REM"] or 0) < GOAL_REM_F1 else ""
    )
    absolute_note = (
        "; the absolute\n  values are given too (a window that is all wake or all sleep has nothing to be relative to)"
        if arch["absolute"] else ""
    )
    ema_note = (
        f"; the weights\nshipped are an exponential moving average (decay {train['ema']}) of the trained ones"
        if train["ema"] else ""
    )
    attempts = "".join(
        f"* {a['quantization']}, {a['what']}: {100 * a['agreement_training_windows']:.2f} %\n"
        for a in report["quantization_attempts"]
    )
    smoke_note = "> **SMOKE RUN (`--quick`): a few records, a few optimiser steps. These numbers mean nothing.**\n" if smoke else ""
    return f"""# Model card: `{report['id']}` (causal W / NREM / REM from inter-beat intervals)

{smoke_note}Files: `models/shipped/{report['onnx']}` (the model the daemon loads, {report['quantization']}) and its
manifest `models/shipped/{report['manifest']}`. Everything below was measured by the run that wrote those files:

    {report['command']}

in **{report['wall_seconds']:.0f} s** wall time on one CPU thread (seed {report['seed']}; the run is deterministic):
leave-one-subject-out cross-validation ({report['timing']['loso_s']:.0f} s), final fit
({report['timing']['final_fit_s']:.0f} s), ONNX export, static int8 quantisation and held-out evaluation
({report['timing']['export_eval_s']:.0f} s).

## What it does

Every 30 s, when an epoch closes, the daemon feeds the model one input `ibi` (float32, shape
(batch, 1, {arch['context']} x 750)): the inter-beat intervals of the last **{arch['context']} epochs ({minutes:.0f} min)**,
the scored epoch last, as WatchSleepNet's sample-and-hold signal (IBI in seconds held from one beat to the
next, 25 Hz, 0 = missing or IBI >= 2 s, zeros before the record start), built by `edged.dsp.ibi`
(`sample_and_hold` for training, its streaming twin live). Output `probabilities` (batch, 3): softmax over
W, NREM (N1+N2+N3), REM. No look-ahead (`lookahead_epochs: 0`), no state, no whole-night statistic: all
normalisation is computed inside the graph from the window itself.

Architecture: {report['params']:,} parameters; {report['macs']['per_scored_epoch'] / 1e6:.1f} M multiply-accumulates per
scored epoch ({report['macs']['encoder_per_epoch'] / 1e3:.0f} k per context epoch in the encoder, run {arch['context']} times,
plus {report['macs']['head'] / 1e3:.0f} k in the head).

* **Per-epoch encoder**, shared over the {arch['context']} epochs of the window (the spirit of WatchSleepNet's
  epoch encoder: {enc_params / 1e3:.0f} k parameters against its 0.64 M). From each epoch alone: the epoch's mean IBI over valid samples, the
  relative deviation of every sample from it (clipped to +-50 %, so ectopic or missed beats cannot dominate),
  the valid-sample mask. {len(arch['enc_channels'])} strided convs ({' -> '.join(str(x) for x in arch['enc_channels'])} channels;
  kernel 10 stride 5 (25 Hz -> 5 Hz), then kernel {arch['enc_kernel']} stride 2; {'BatchNorm, ' if arch['batchnorm'] else ''}ReLU),
  average-pooled over the epoch, plus three scalars: log mean IBI, log relative variability, valid share.
* **Window head**: each epoch's log mean IBI and log variability are taken relative to the mean over the
  window's valid epochs (removes the subject's heart-rate baseline without any whole-night statistic){absolute_note};
  1x1 conv to {arch['hidden']} channels, {len(arch['dilations'])} residual causal dilated convs (kernel 3, dilations
  {', '.join(str(d) for d in arch['dilations'])}, zero-padded on the past side only), then the last position and the
  window mean, a {arch['hidden']}-unit layer, 3 logits, softmax.

Training: class-weighted cross-entropy (weights = inverse class frequency ^ {train['class_weight_power']}), unscored
epochs ignored; AdamW lr {train['lr']} (warm-up {train['warmup_steps']} steps, cosine decay), weight decay
{train['weight_decay']}; {train['steps']} steps of {train['crops_per_step']} random crops of {train['crop_epochs']} epochs (each crop
carries its real {arch['context'] - 1}-epoch history, zeros before a record start); dropout {arch['dropout']}{ema_note}.
For speed each epoch is encoded once per crop and the windows are formed from encoded epochs; this gives the
same numbers as the deployed window-by-window graph (checked on the held-out night: max |torch - ONNX
float| probability difference {report['held_out']['torch_vs_onnx_float_max_abs']:.1e}).

## Data

MIT-BIH Polysomnographic Database (PhysioNet `slpdb`), **ODC-By 1.0**: beat-by-beat RR intervals from
cardiologist-reviewed ECG beats and R&K stages per 30-s epoch (S1 -> N1, S2 -> N2, S3+S4 -> N3;
movement/unscored epochs are not trained on or scored). Cite:

* Ichimaru Y, Moody GB. Development of the polysomnographic database on CD-ROM. *Psychiatry and Clinical
  Neurosciences* 53(2):175-177 (1999).
* Goldberger AL, Amaral LAN, Glass L, Hausdorff JM, Ivanov PCh, Mark RG, Mietus JE, Moody GB, Peng C-K,
  Stanley HE. PhysioBank, PhysioToolkit, and PhysioNet. *Circulation* 101(23):e215-e220 (2000).

Training set: {len(report['records'])} records, {report['subjects']} subjects ({', '.join(report['records'])}).
slp01a+slp01b and slp02a+slp02b are two halves of one night of one subject each; each half is its own
record here (its window starts from zeros at its own start). **slp61 is held out entirely**: it is the demo
recording bundled with edged, and the shipped model never saw it.

## Results

### Leave-one-subject-out cross-validation ({len(report['loso']['folds'])} folds, pooled over all folds)

{SCORES_HEAD}{_scores_row("**pooled**", cv)}{fold_rows}
Per-fold kappa: mean {_f(cv['fold_kappa_mean'])}, SD {_f(cv['fold_kappa_sd'])}. Per-class F1 is n/a where the subject
has no epoch of that class (macro F1 then averages the classes present).

Pooled confusion (rows reference, columns predicted):

{_confusion_table(cv['confusion'])}
### Held-out record slp61 (final model, trained on all {len(report['records'])} records)

{SCORES_HEAD}{_scores_row("float32 ONNX", held['float'])}{_scores_row("int8 ONNX", held['int8'])}
Confusion of the shipped model ({report['shipped_variant']}) on slp61:

{_confusion_table(shipped['confusion'])}
### int8 vs float

Static int8 quantisation: onnxruntime `quantize_static`, QDQ, per-channel int8 weights, uint8 activations,
{report['calibration']['method']} calibration over {report['calibration']['windows']} real windows from the training records.
Variants are tried most-int8 first; the first whose argmax agrees with float on at least
{100 * report['calibration']['check_agreement_required']:.1f} % of {report['calibration']['check_windows']} other training windows ships.
That choice is made without slp61. The bar is above the 99 % goal because training windows flatter
agreement: in an earlier run of this command (same model: the run is deterministic) with MinMax
calibration and a 99 % bar, the every-Conv-and-Gemm variant agreed on 99.2 % of training windows but on
98.1 % of slp61, missing the goal. Attempts in this run:

{attempts}
Shipped: **{report['quantization']}**: {last_try['what']}; {report['int8_mac_share']:.1f} % of the multiply-accumulates
run in int8. Ops in int8 (QDQ sandwiches): {_ops(ops['int8'])}. Left float32 (the cheap in-graph
statistics{', the window head' if 'head float' in last_try['what'] else ''}, softmax): {_ops(ops['float'])}.

On slp61 (held out), the argmax of int8 and float agree on **{100 * q['agreement']:.2f} %** of all {q['epochs_all']}
epochs ({100 * q['agreement_scored']:.2f} % of the {q['epochs_scored']} scored ones); accuracy float
{_f(q['accuracy_float'])} vs int8 {_f(q['accuracy_int8'])} ({q['accuracy_diff_points']:+.2f} points); largest probability
difference {q['max_abs_probability_diff']:.3f}. Goal (agreement >= 99 %, accuracy within 1 point):
**{'met' if q['goal_met'] else 'NOT met'}**.

## Against the goal and the peers

Project goal: kappa >= {GOAL_KAPPA} with REM F1 >= {GOAL_REM_F1}. Cross-validated (LOSO pooled) kappa
{_f(cv['kappa'])} and REM F1 {_f(cv['f1']['REM'])}: **the goal is {'met' if goal_met else 'NOT met'}**.
{rem_note}
On the held-out night slp61 the shipped model does worse than the cross-validated figure (kappa
{_f(shipped['kappa'])} vs {_f(cv['kappa'])}); with a per-fold kappa SD of {_f(cv['fold_kappa_sd'])}, one more subject cannot
tell whether slp61 is a hard night or the LOSO figure is optimistic.

How the configuration was chosen, so the LOSO figures can be read for what they are: context length
(10 vs 20 min), BatchNorm or none, weight averaging, absolute-level inputs, encoder size, class-weight
strength and step count were compared on a 4-fold subject-grouped split of the **same 14 records** before
this run, so the LOSO figures are somewhat optimistic. slp61 played no part in those choices. What
mattered: dropping BatchNorm (its running statistics, estimated from crops of a few very different subjects,
made held-out predictions swing from one checkpoint to the next) and averaging the weights (EMA), and giving
the head the absolute heart-rate level besides the window-relative one. A 20-min context, a larger encoder
and full inverse-frequency class weights did not help.

Peer figures measured by the project earlier on this same data (W/NREM/REM; **not re-run here**, and their
protocol may differ in detail from the one above):

| method | kappa | accuracy |
|---|---:|---:|
| LightGBM on causal HRV features | 0.25 | 0.62 |
| sleepecg `wrn-gru-mesa` (pretrained on MESA) | 0.08 | 0.55 |
| **this model, LOSO pooled** | **{_f(cv['kappa'], 2)}** | **{_f(cv['accuracy'], 2)}** |
| this model, held-out slp61, {report['shipped_variant']} | {_f(shipped['kappa'], 2)} | {_f(shipped['accuracy'], 2)} |

For scale: WatchSleepNet reports kappa 0.68 on DREAMT wrist-PPG IBI with a whole-night bidirectional model
pretrained on thousands of SHHS/MESA nights; a reproduction without pretraining reached 0.22.

## Limitations

* **Small data**: {report['subjects']} subjects, {len(report['records'])} records, {cv['epochs']} scored epochs; REM is scarce
  ({cv['support']['REM']} REM epochs in all; slp32, slp66 and slp67x have none). Per-fold figures swing widely, and
  the pooled kappa has a wide confidence interval.
* **Population**: mostly middle-aged men with obstructive sleep apnea (the database was collected to study
  it); apneic cycles modulate heart rate in every stage. Not validated on healthy sleepers, women, children,
  or any medication/arrhythmia population.
* **Beats are ECG-derived and cardiologist-reviewed**, not wrist PPG: real wearable IBI has more missed and
  spurious beats, larger timing jitter and motion gaps. Expect lower figures from a watch until the model is
  validated (or fine-tuned) on PPG beats.
* W / NREM / REM only; N1 is folded into NREM and is the stage most confused with W.
* Needs {arch['context']} epochs of history for its full context: the first {arch['context'] - 1} epochs of a night (or after
  a long gap) are scored from a partly empty window.
* Scores each epoch from the past {minutes:.0f} min only; a bidirectional whole-night model would do better
  offline, but edged stages live.
"""
