"""Every model of the zoo, by name, and the contract its entry module fulfils.

``python -m models <command> <name>`` looks the name up here and imports only that model's entry module,
so a model's dependencies (its dataset loader, its architecture) never load for another.

An entry module (``MODELS[name]``) defines:

``train(data, out, *, quick, seed, work, command) -> dict``
    The whole recipe: subject-wise evaluation (skipped with ``quick``), final fit, ONNX export, int8
    quantisation, manifest (and card unless ``quick``) written into ``out``. ``data`` is the dataset
    directory, or ``None`` for a model trained on its documented synthetic generator. ``work`` holds what
    does not ship (float checkpoints, the full report). Returns a report with at least ``id``,
    ``manifest`` (file name in ``out``) and ``wall_seconds``. ``quick`` is a smoke run on a tiny data set
    that finishes in seconds; CI runs it for every model.
``evaluate(data, *, quick, seed, work) -> dict``
    Subject-wise folds (leave-one-subject-out where the data allows): ``protocol``, ``classes``,
    ``accuracy``, ``kappa``, ``macro_f1``, ``f1`` (per class), ``confusion``.
``export(work, out) -> Path``
    The trained float model in ``work`` -> float ONNX + manifest in ``out``; returns the manifest path.
``quantize(manifest, *, data, out) -> Path``
    Static int8 (BatchNorm folded, calibration windows from ``data`` or the generator) of a float model's
    manifest -> int8 ONNX + manifest in ``out``; recurrent or attention parts may stay float or dynamic int8,
    stated in the manifest's ``quantization`` and ``quantization_detail``. Returns the manifest path.
``DATA``
    The model's data folder under ``../shared/data`` (the default ``--data``), or ``None`` for a model
    trained on its documented synthetic generator.
``SHIPPED``
    Its shipped manifest, relative to ``models/`` (what ``python -m models list`` and the benchmarks read).
``CARD`` (optional)
    ``(render function "module:function", report path relative to models/, card path relative to models/)``
    for ``python -m models card <name>``.
"""

from __future__ import annotations

# name -> entry module
MODELS: dict[str, str] = {
    "ibi-slpdb": "models.ibi.entry",
    "ibi-walch": "models.walch.entry",
    "eeg-sleepedf": "models.eeg.entry",
    "ulw-sleepnet": "models.seed.ulw_entry",
    "masleepnet": "models.seed.masleepnet_entry",
    "watchsleepnet": "models.seed.watchsleepnet_entry",
    "sleepvst": "models.seed.sleepvst_entry",
    "slumbernet": "models.seed.slumbernet_entry",
    "slumbernet-lite": "models.seed.slumbernet_lite_entry",
}
