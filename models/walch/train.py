"""Pretrain on watch-like slpdb nights, fine-tune on Walch nights, and leave-one-subject-out evaluation.

The WatchSleepNet recipe at edge size: pretraining once on nights derived from PSG beats (slpdb, ECG R
peaks turned into watch readings), then, per fold, a short fine-tuning of all layers on the training
subjects' watch nights, from the pretrained weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from models.ibi.train import warmup_cosine, weighted_step
from models.metrics import format_scores, scores
from models.walch.arch import ArchConfig, HrStager
from models.walch.data import CLASSES, Night, padded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    crops_per_step: int = 8
    crop_epochs: int = 160
    lr: float = 3e-3
    weight_decay: float = 1e-3
    class_weight_power: float = 0.5  # 0: unweighted, 1: inverse class frequency
    warmup_steps: int = 20
    ema: float = 0.98

    def to_dict(self) -> dict:
        return asdict(self)


def class_weights(nights: list[Night], power: float) -> np.ndarray:
    labels = np.concatenate([n.labels for n in nights])
    counts = np.bincount(labels[labels >= 0], minlength=len(CLASSES)).astype(np.float64)
    w = (counts.sum() / (len(CLASSES) * np.maximum(counts, 1.0))) ** power
    return w / (w * counts).sum() * counts.sum()


def fit(nights: list[Night], arch: ArchConfig, cfg: TrainConfig, *, seed: int,
        init: dict[str, torch.Tensor] | None = None) -> HrStager:
    """Train on ``nights`` (random crops with their real history, class-weighted cross-entropy, AdamW,
    cosine decay, EMA of the weights), from ``init`` weights when given."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    c = arch.context
    model = HrStager(arch)
    if init is not None:
        model.load_state_dict(init)
    data = [tuple(torch.from_numpy(a) for a in padded(n, c)) for n in nights]
    length = min(cfg.crop_epochs, int(min(n.n_epochs for n in nights)))
    labels = [torch.from_numpy(n.labels) for n in nights]
    sizes = np.array([n.n_epochs for n in nights], dtype=np.float64)
    weight = torch.tensor(class_weights(nights, cfg.class_weight_power), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    lr_at = warmup_cosine(cfg)

    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.ema else None
    model.train()
    for step in range(cfg.steps):
        hrs, els, ys = [], [], []
        for i in rng.choice(len(nights), size=cfg.crops_per_step, p=sizes / sizes.sum()):
            a = int(rng.integers(0, int(sizes[i]) - length + 1))
            hrs.append(data[i][0][a : a + length + c - 1])
            els.append(data[i][1][a : a + length + c - 1])
            ys.append(labels[i][a : a + length])
        y = torch.cat(ys)
        logits = model.night_logits(torch.stack(hrs), torch.stack(els)).reshape(-1, len(CLASSES))
        weighted_step(model, opt, logits, y, weight, lr=lr_at(step), ema=ema, ema_decay=cfg.ema)
    if ema is not None:
        model.load_state_dict(ema)
    model.eval()
    return model


@torch.no_grad()
def predict_night(model: HrStager, night: Night) -> np.ndarray:
    """Class probabilities (n_epochs, 3), each epoch from its causal window only."""
    model.eval()
    hr, elapsed = padded(night, model.cfg.context)
    logits = model.night_logits(torch.from_numpy(hr)[None], torch.from_numpy(elapsed)[None])[0]
    return torch.softmax(logits, dim=-1).numpy()


def loso(nights: list[Night], folds: list[tuple[str, list[str]]], arch: ArchConfig, cfg: TrainConfig, *, seed: int,
         init: dict[str, torch.Tensor] | None) -> dict:
    """For each fold ``(test subject, training subjects)``: fine-tune from ``init`` (or train from scratch
    when None) on the training subjects, score the test subject. Predictions are kept for the int8 check."""
    by_subject = {n.subject: n for n in nights}
    out_folds, all_true, all_pred, predictions = [], [], [], {}
    for k, (test, train) in enumerate(folds):
        t0 = time.monotonic()
        model = fit([by_subject[s] for s in train], arch, cfg, seed=seed + k, init=init)
        night = by_subject[test]
        probs = predict_night(model, night)
        pred = probs.argmax(1)
        s = scores(night.labels, pred, CLASSES)
        s.update(subject=test, seconds=round(time.monotonic() - t0, 1))
        out_folds.append(s)
        all_true.append(night.labels)
        all_pred.append(pred)
        predictions[test] = {"model": model, "probs": probs}
        log.info("fold %2d %-8s %s (%.0f s)", k + 1, test, format_scores(s, CLASSES), s["seconds"])
    pooled = scores(np.concatenate(all_true), np.concatenate(all_pred), CLASSES)
    kappas = np.array([f["kappa"] for f in out_folds if f["kappa"] is not None])
    pooled["fold_kappa_mean"] = round(float(kappas.mean()), 4)
    pooled["fold_kappa_sd"] = round(float(kappas.std(ddof=1)), 4) if len(kappas) > 1 else None
    log.info("LOSO pooled        %s", format_scores(pooled, CLASSES))
    return {"pooled": pooled, "folds": out_folds, "predictions": predictions}
