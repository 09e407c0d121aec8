"""``python -m models train slumbernet-lite``: the edge variant of SlumberNet; the recipe is
:mod:`models.seed.slumbernet_entry`'s with the lighter network (see :mod:`models.seed.slumbernet`)."""

from __future__ import annotations

from models.seed import slumbernet_entry as base

DATA = None
SHIPPED = "shipped/slumbernet_lite.json"
RECIPE = base.make_recipe(lite=True)


def train(data, out, *, quick=False, seed=0, work=None, command=""):
    return base.train(data, out, quick=quick, seed=seed, work=work, command=command, recipe=RECIPE)


def evaluate(data, *, quick=False, seed=0, work=None):
    return base.evaluate(data, quick=quick, seed=seed, work=work, recipe=RECIPE)


def export(work, out):
    return base.export(work, out, recipe=RECIPE)


def quantize(manifest, *, data=None, out, work=None):
    return base.quantize(manifest, data=data, out=out, work=work, recipe=RECIPE)


CARD = ("models.seed.cards:render_slumbernet_lite", "work/slumbernet-lite/slumbernet_lite.report.json",
        "cards/slumbernet-lite.md")
