"""Built-in plugin: the synthetic crowds datasets ``SYN-SPARSE`` and ``SYN-DENSE`` (no files needed).

See :mod:`harness.data.synthetic` for the scene model and split sizes (train 60 / val 15 / test 30).
"""
from __future__ import annotations

from pathlib import Path

from ..hookspecs import hookimpl
from ..specs import DatasetSpec


def _factory(variant: str):
    def build(root: Path | None = None):
        from ..data.synthetic import SyntheticCrowds

        return SyntheticCrowds(variant, root)

    build.__name__ = f"build_{variant.lower().replace('-', '_')}"
    return build


@hookimpl
def harness_register_datasets(register):
    register(DatasetSpec(
        name="SYN-SPARSE", factory=_factory("SYN-SPARSE"), needs_root=False,
        aliases=("synthetic-sparse", "syn_sparse", "synsparse"),
        description="synthetic crowds, 5-40 large people per 320x240 image, mild perspective "
                    "(train 60 / val 15 / test 30)"))
    register(DatasetSpec(
        name="SYN-DENSE", factory=_factory("SYN-DENSE"), needs_root=False,
        aliases=("synthetic-dense", "syn_dense", "syndense"),
        description="synthetic crowds, 100-400 small people per 320x240 image, strong perspective "
                    "(train 60 / val 15 / test 30)"))
    register(DatasetSpec(
        name="SYN-PARK", factory=_factory("SYN-PARK"), needs_root=False, aliases=("synthetic-park",),
        description="synthetic crowds, 40-160 people per 192x144 image, moderate perspective (the demo pair; "
                    "train 60 / val 15 / test 30)"))
    register(DatasetSpec(
        name="SYN-STREET", factory=_factory("SYN-STREET"), needs_root=False, aliases=("synthetic-street",),
        description="synthetic crowds, 60-200 smaller people per 192x144 image, stronger perspective (the demo "
                    "pair; train 60 / val 15 / test 30)"))
