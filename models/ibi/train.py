"""Fit, cross-validate and evaluate the causal IBI stager on nights of sample-and-hold IBI."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from models.ibi.arch import ArchConfig, IbiStager
from models.ibi.data import CLASSES, Night, padded_epochs
from models.metrics import format_scores, scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400  # optimiser steps; one step sees crops_per_step * crop_epochs scored epochs
    crops_per_step: int = 8
    crop_epochs: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-3
    class_weight_power: float = 0.5  # 0: unweighted, 1: inverse class frequency
    warmup_steps: int = 20
    ema: float = 0.98  # decay of an exponential moving average of the weights (0: none); the EMA is returned

    def to_dict(self) -> dict:
        return asdict(self)


def class_weights(nights: list[Night], power: float) -> np.ndarray:
    labels = np.concatenate([n.labels for n in nights])
    counts = np.bincount(labels[labels >= 0], minlength=len(CLASSES)).astype(np.float64)
    w = (counts.sum() / (len(CLASSES) * np.maximum(counts, 1.0))) ** power
    return w / (w * counts).sum() * counts.sum()  # the average weight of a training epoch is 1



def weighted_step(model, opt, logits, y, weight, *, lr: float, ema: dict | None, ema_decay: float):
    """One optimiser step on class-weighted cross-entropy (labels < 0 ignored, normalised by the weight of
    the labels present), then the exponential moving average of the weights. Shared by the slpdb and Walch
    recipes. Returns the loss."""
    valid = y >= 0
    loss = F.cross_entropy(logits[valid], y[valid], weight=weight, reduction="sum") / weight[y[valid]].sum().clamp(
        min=1.0
    )
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss.backward()
    opt.step()
    if ema is not None:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(ema_decay).add_(v, alpha=1.0 - ema_decay)
                else:
                    ema[k].copy_(v)
    return loss


def warmup_cosine(cfg):
    """Learning rate by step: linear warm-up over ``cfg.warmup_steps``, then a cosine decay to 0 at
    ``cfg.steps`` (shared by the slpdb and Walch recipes)."""

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1.0 + np.cos(np.pi * t))

    return lr_at


def fit(nights: list[Night], arch: ArchConfig, cfg: TrainConfig, *, seed: int, callback=None) -> IbiStager:
    """Train a fresh model on ``nights`` (random crops, class-weighted cross-entropy, AdamW, cosine decay)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    c = arch.context
    model = IbiStager(arch)
    padded = [torch.from_numpy(padded_epochs(n.ibi, c)) for n in nights]
    labels = [torch.from_numpy(n.labels) for n in nights]
    sizes = np.array([n.n_epochs for n in nights], dtype=np.float64)
    weight = torch.tensor(class_weights(nights, cfg.class_weight_power), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    lr_at = warmup_cosine(cfg)

    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.ema else None
    model.train()
    running = 0.0
    for step in range(cfg.steps):
        xs, ys, lengths = [], [], []
        for i in rng.choice(len(nights), size=cfg.crops_per_step, p=sizes / sizes.sum()):
            n = int(sizes[i])
            length = min(cfg.crop_epochs, n)
            a = int(rng.integers(0, n - length + 1))
            xs.append(padded[i][a : a + length + c - 1])
            ys.append(labels[i][a : a + length])
            lengths.append(length + c - 1)
        y = torch.cat(ys)
        logits = model.night_logits(torch.cat(xs), lengths)
        loss = weighted_step(model, opt, logits, y, weight, lr=lr_at(step), ema=ema, ema_decay=cfg.ema)
        value = float(loss.detach())
        running = 0.9 * running + 0.1 * value if step else value
        if (step + 1) % 50 == 0:
            log.debug("step %d loss %.4f", step + 1, running)
            if callback is not None:  # e.g. a learning curve on held-out nights
                current = {k: v.clone() for k, v in model.state_dict().items()}
                if ema is not None:
                    model.load_state_dict(ema)
                model.eval()
                callback(step + 1, model)
                model.load_state_dict(current)
                model.train()
    if ema is not None:
        model.load_state_dict(ema)
    model.eval()
    return model


@torch.no_grad()
def predict_night(model: IbiStager, night: Night) -> np.ndarray:
    """Class probabilities (n_epochs, 3) for every epoch of a night, each from its causal window only."""
    model.eval()
    x = torch.from_numpy(padded_epochs(night.ibi, model.cfg.context))
    return torch.softmax(model.night_logits(x), dim=-1).numpy()


def loso(nights: list[Night], arch: ArchConfig, cfg: TrainConfig, *, seed: int) -> dict:
    """Leave-one-subject-out: for each subject, train on every other subject's nights, score its own."""
    subjects = sorted({n.subject for n in nights})
    folds, all_true, all_pred = [], [], []
    for fold, subject in enumerate(subjects):
        t0 = time.monotonic()
        train = [n for n in nights if n.subject != subject]
        test = [n for n in nights if n.subject == subject]
        model = fit(train, arch, cfg, seed=seed)
        y = np.concatenate([n.labels for n in test])
        p = np.concatenate([predict_night(model, n).argmax(1) for n in test])
        s = scores(y, p, CLASSES)
        s.update(subject=subject, records=[n.name for n in test], seconds=round(time.monotonic() - t0, 1))
        folds.append(s)
        all_true.append(y)
        all_pred.append(p)
        log.info("fold %2d %-6s %s (%.0f s)", fold + 1, subject, format_scores(s, CLASSES), s["seconds"])
    pooled = scores(np.concatenate(all_true), np.concatenate(all_pred), CLASSES)
    kappas = np.array([f["kappa"] for f in folds if f["kappa"] is not None])
    pooled["fold_kappa_mean"] = round(float(kappas.mean()), 4)
    pooled["fold_kappa_sd"] = round(float(kappas.std(ddof=1)), 4) if len(kappas) > 1 else None
    log.info("LOSO pooled      %s", format_scores(pooled, CLASSES))
    return {"pooled": pooled, "folds": folds}
