"""Fitting the feature-window ensemble, and its leave-one-subject-out evaluation."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from models.eeg.arch import ArchConfig, Ensemble, FeatureWindowNet
from models.eeg.data import CHANNELS, CLASSES, FEATURES, Night, loso_folds, windows
from models.metrics import format_scores, scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    passes: float = 10.0  # passes over the training windows, per member
    batch: int = 256
    lr: float = 3e-3  # one-cycle peak
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    class_weight_power: float = 0.0  # class weights (n / n_class) ** power; 0.5 measured worse than none
    history_dropout: float = 0.1  # share of windows whose oldest rows are replaced by the missing row

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NightInputs:
    """A night's model inputs for every epoch, and the labels/crop they are scored on."""

    night: Night
    x: np.ndarray  # (n_epochs, channels, context, n_features)

    @classmethod
    def build(cls, night: Night, context: int) -> NightInputs:
        return cls(night, windows(night.features(), context))


def _training_set(inputs: list[NightInputs]) -> tuple[np.ndarray, np.ndarray]:
    xs = [i.x for i in inputs]
    ys = [i.night.labels for i in inputs]
    return np.concatenate(xs), np.concatenate(ys)


def fit(inputs: list[NightInputs], arch: ArchConfig, cfg: TrainConfig, *, seed: int) -> Ensemble:
    x, y = _training_set(inputs)
    newest = x[:, :, -1, :].reshape(len(x), -1)  # the scored epoch's rows, channels concatenated as in the model
    mean, std = newest.mean(0), newest.std(0) + 1e-6
    counts = np.bincount(y, minlength=len(CLASSES)).astype(np.float64)
    weights = (counts.sum() / np.maximum(counts, 1) / len(CLASSES)) ** cfg.class_weight_power
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=cfg.label_smoothing)
    missing = torch.tensor(FEATURES.missing_row(), dtype=torch.float32)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    steps = max(1, int(cfg.passes * len(x) / cfg.batch))
    members = []
    for m in range(arch.members):
        torch.manual_seed(seed * 1000 + m)
        gen = torch.Generator().manual_seed(seed * 1000 + m)
        net = FeatureWindowNet(len(CHANNELS), FEATURES.n_features, arch, mean, std)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr / 10, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps)
        net.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (cfg.batch,), generator=gen)
            xb = xt[idx].clone()
            if cfg.history_dropout > 0 and arch.context > 1:
                # As at the start of a stream: the oldest rows are the missing row (what edged preloads).
                cut = torch.randint(1, arch.context, (cfg.batch,), generator=gen)
                hit = torch.rand(cfg.batch, generator=gen) < cfg.history_dropout
                rows = torch.arange(arch.context)[None, :] < cut[:, None]  # (batch, context)
                mask = (rows & hit[:, None])[:, None, :, None]
                xb = torch.where(mask, missing, xb)
            loss = loss_fn(net.logits(*xb.unbind(1)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        members.append(net)
    return Ensemble(members).eval()


def predict(model: Ensemble, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    with torch.no_grad():
        out = [model(*torch.from_numpy(x[i : i + batch]).unbind(1)).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)


def loso(nights: list[Night], arch: ArchConfig, cfg: TrainConfig, *, seed: int) -> dict:
    """Leave-one-subject-out: per fold and pooled scores on the (cropped) held-out nights, and
    the held-out probabilities (``probs``/``labels``, per fold) for the int8 check."""
    inputs = {n.name: NightInputs.build(n, arch.context) for n in nights}
    folds, all_true, all_pred, held = [], [], [], []
    for fold in loso_folds(nights):
        t0 = time.monotonic()
        model = fit([inputs[n.name] for n in fold.train], arch, cfg, seed=seed)
        x = np.concatenate([inputs[n.name].x for n in fold.test])
        y = np.concatenate([n.labels for n in fold.test])
        probs = predict(model, x)
        s = scores(y, probs.argmax(1), CLASSES)
        log.info("fold %s %s (%.0f s)", fold.subject, format_scores(s, CLASSES), time.monotonic() - t0)
        folds.append({"subject": fold.subject, "nights": [n.name for n in fold.test], **s})
        all_true.append(y)
        all_pred.append(probs.argmax(1))
        held.append({"subject": fold.subject, "model": model, "x": x, "labels": y, "probs": probs})
    pooled = scores(np.concatenate(all_true), np.concatenate(all_pred), CLASSES)
    kappas = np.array([f["kappa"] for f in folds], dtype=np.float64)
    pooled["fold_kappa_mean"] = round(float(kappas.mean()), 4)
    pooled["fold_kappa_sd"] = round(float(kappas.std(ddof=1)), 4) if len(kappas) > 1 else None
    log.info("LOSO pooled %s", format_scores(pooled, CLASSES))
    return {"folds": folds, "pooled": pooled, "held": held}
