"""harness-ldm's hook implementations (entry point ``ldm`` of the ``harness`` group).

- Strategy ``ldm`` (options :class:`harness_ldm.config.LDMOptions`): trains the LDM crowd-map counter on the labelled
  source (selected on its val split) and returns it; never looks at the target.
- Counter ``ldm``: the counter itself — ``weights: <ldm-model.pt>`` loads a trained one (a cell's
  ``checkpoints/ldm-model.pt``), otherwise a randomly initialised one is built from the options (tests, contracts).
- Methods (leaderboard rows): ``ldm`` (the poster: latent diffusion, K = 1), ``ldm-k4`` (K = 4 hypotheses, count =
  median of their counts; the pixel-wise median / mean fusions of the decoded maps are scored as extra outputs;
  per-hypothesis counts in the predictions), ``ldm-pixel`` (CrowdDiff's
  choice: diffusion on the crowd map itself, RGB concatenated; K = 1). Profiles: ``paper`` (256 crops, VQ f = 4 with
  3 latent channels, 500 DDIM steps; GPU) and ``smoke`` (CPU minutes), see :mod:`harness_ldm.config`.
- Command ``harness ldm steps RUN_DIR``: MAE and seconds per image against DDIM steps (:mod:`harness_ldm.report`).
"""
from __future__ import annotations

from harness import CommandSpec, CounterSpec, MethodSpec, StrategySpec, hookimpl

from .config import PAPER, PAPER_PIXEL, SMOKE, SMOKE_PIXEL, TINY, LDMOptions

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = 1


def _strategy(options: LDMOptions):
    from .strategy import LDMStrategy

    return LDMStrategy(options)


def _counter(device: str = "cpu", weights: str | None = None, seed: int = 0, precision: str = "fp32",
             cache_root=None, **options):
    """``weights``: a saved model (``ldm-model.pt``; ``sampling`` / ``counting`` options override its test-time
    options); else an untrained counter built from ``options`` (:class:`LDMOptions` keys) with seed ``seed``."""
    from harness import ConfigError, Provenance

    from .counter import LDMCounter, load_counter

    if weights is not None:
        extra = sorted(set(options) - {"sampling", "counting"})
        if extra:
            raise ConfigError(f"counter ldm with weights takes only sampling / counting options, got "
                              f"{', '.join(extra)}")
        return load_counter(weights, device, precision, sampling=options.get("sampling"),
                            counting=options.get("counting"))
    from .config import parse_options
    from .crowdmap import normaliser
    from .models import LDMNet

    o = parse_options(options, "counter ldm")
    net = LDMNet(o, seed=seed, cache_root=cache_root)
    net.normaliser.fill_(normaliser(o.sigma))
    return LDMCounter(net, o, device=device, precision=precision, name="ldm-untrained",
                      provenance=Provenance("random-init"), seed=seed)


@hookimpl
def harness_register_strategies(register):
    register(StrategySpec(
        name="ldm", factory=_strategy, options=LDMOptions, uses_target_images=False, tiny_options=TINY,
        description="LDM crowd-map counter trained on the source: VQ first stage, ε-UNet on [z_t, T(y)], DDIM, "
                    "contour counting (poster 'Crowd Counting Using Diffusion-Based Latent Space'; CrowdDiff)"))


@hookimpl
def harness_register_counters(register):
    register(CounterSpec(
        name="ldm", factory=_counter, tiny_options=TINY,
        description="LDM crowd-map counter (stochastic): weights=<ldm-model.pt> of a cell, or untrained from options"))


def _profiles(smoke: dict, paper: dict, **sampling) -> dict:
    return {"smoke": {**smoke, "sampling": {**smoke["sampling"], **sampling}},
            "paper": {**paper, "sampling": {**paper["sampling"], **sampling}}}


@hookimpl
def harness_register_methods(register):
    register(MethodSpec("ldm", "ldm", profiles=_profiles(SMOKE, PAPER, hypotheses=1),
                        description="LDM crowd-map counter (latent diffusion, DDIM, contours), one sample per crop"))
    register(MethodSpec("ldm-k4", "ldm", profiles=_profiles(SMOKE, PAPER, hypotheses=4, fusion="count-median"),
                        description="LDM counter, K = 4 samples per crop, count = median of the 4 counts (no labels); "
                                    "pixel-median / pixel-mean fusions scored as extra outputs"))
    register(MethodSpec("ldm-pixel", "ldm", profiles=_profiles(SMOKE_PIXEL, PAPER_PIXEL, hypotheses=1),
                        description="CrowdDiff's pixel-space variant: diffusion on the crowd map, RGB concatenated"))


@hookimpl
def harness_register_commands(register):
    from .report import ldm_group

    register(CommandSpec("ldm", command=ldm_group,
                         description="LDM reports: steps RUN_DIR (MAE, s/image vs DDIM steps)"))
