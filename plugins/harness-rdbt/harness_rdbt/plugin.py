"""harness-rdbt's hook implementations (entry point ``rdbt`` of the ``harness`` group).

Dataset: ``WIDERFACE`` (:mod:`harness_rdbt.widerface`, the detector's pre-training data). Strategies: ``rdbt`` (co-training on the target's unlabelled images) and ``rdbt-source`` (R or D alone).
Methods (leaderboard rows; RDBT Tables 1–2): ``regnet`` (R source-only), ``detnet`` (D source-only), ``rdbt``,
``rdbt-no-fusion`` (Table 2 "w/o fusion"), ``rdbt-random-patches`` (Table 2 "w/ RS"). Profiles: ``smoke``
(CPU minutes) and ``paper`` (§4.2), see :mod:`harness_rdbt.config`. Command: ``harness rdbt iterations RUN_DIR``
(Table 3: each cycle's R_t/D_t on the target test split, for the report only).
"""
from __future__ import annotations

from harness import CommandSpec, DatasetSpec, MethodSpec, StrategySpec, hookimpl

from .config import PAPER, SMOKE, TINY, RDBTConfig

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = 1


def _rdbt(options: RDBTConfig):
    from .strategy import RDBT

    return RDBT(options)


def _rdbt_source(options: RDBTConfig):
    from .strategy import RDBTSource

    return RDBTSource(options)


def _widerface(root):
    from .widerface import WiderFace

    return WiderFace(root)


@hookimpl
def harness_register_datasets(register):
    register(DatasetSpec("WIDERFACE", _widerface, aliases=("wider-face",),
                         description="WIDER FACE (Yang et al. 2016), face boxes: CSP's pre-training data in RDBT "
                                     "(points = box centres; scored on val, test labels withheld)"))


@hookimpl
def harness_register_strategies(register):
    register(StrategySpec(
        name="rdbt", factory=_rdbt, options=RDBTConfig, uses_target_images=True, tiny_options=TINY,
        description="regression-detection bi-knowledge transfer: DSSINet + CSP + Φ trained on the source, "
                    "T self-supervised cycles on the target's unlabelled images (Liu et al., ACM MM 2020)"))
    register(StrategySpec(
        name="rdbt-source", factory=_rdbt_source, options=RDBTConfig, uses_target_images=False,
        tiny_options={**TINY, "mode": "regnet"},
        description="RDBT's regression (DSSINet, mode regnet) or detection (CSP, mode detnet) counter trained on "
                    "the source only"))


def _profiles(**extra) -> dict:
    return {"smoke": {**SMOKE, **extra}, "paper": {**PAPER, **extra}}


@hookimpl
def harness_register_methods(register):
    register(MethodSpec("regnet", strategy="rdbt-source", profiles=_profiles(mode="regnet"),
                        description="RDBT Table 1 RegNet: DSSINet trained on the source, no adaptation"))
    register(MethodSpec("detnet", strategy="rdbt-source", profiles=_profiles(mode="detnet"),
                        description="RDBT Table 1 DetNet: CSP trained on the source (pseudo boxes), no adaptation"))
    register(MethodSpec("rdbt", strategy="rdbt", profiles=_profiles(),
                        description="RDBT (Liu et al., ACM MM 2020): regression-detection bi-knowledge transfer"))
    register(MethodSpec("rdbt-no-fusion", strategy="rdbt", profiles=_profiles(fusion=False),
                        description="RDBT Table 2 'w/o fusion': R and D fine-tuned on their own predictions"))
    register(MethodSpec("rdbt-random-patches", strategy="rdbt", profiles=_profiles(patch_selection="random"),
                        description="RDBT Table 2 'w/ RS': fine-tuning patches drawn at random"))


@hookimpl
def harness_register_commands(register):
    from .report import rdbt_group

    register(CommandSpec("rdbt", command=rdbt_group, description="RDBT reports (per-iteration table)"))
