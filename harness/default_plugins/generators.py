"""Built-in plugin: the ``stable-diffusion`` generator and the ``heavyweight-counter`` annotator.

- ``stable-diffusion`` (modes text, image): :class:`harness.models.diffusion.StableDiffusionGenerator` — a hub id,
  a local folder or ``"tiny"`` (needs ``pip install crowd-harness[diffusion]``).
- the core's tiny random model builders (``"tiny"`` model ids of kinds ``stable-diffusion``, ``unet2d``,
  ``vqmodel``, ``blip``: :mod:`harness.models.tiny`).
- ``heavyweight-counter``: any registered counter used as a pseudo-labeller
  (:class:`harness.synthetic.CounterAnnotator`; PromptMix's f_ann).
"""
from __future__ import annotations

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..specs import AnnotatorSpec, GeneratorSpec, TinyModelSpec


def _stable_diffusion(device: str = "cpu", cache_root=None, model: str | None = None, **options):
    """Stable Diffusion (options: model, steps, guidance_scale, max_side)."""
    try:
        from ..models.diffusion import SD15_ID, StableDiffusionGenerator
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigError(f"the stable-diffusion generator needs diffusers and transformers ({exc.name} is "
                          f"missing): pip install 'crowd-harness[diffusion]'") from None
    return StableDiffusionGenerator(model or SD15_ID, device=device, cache_root=cache_root, **options)


def _heavyweight_counter(counter: str, device: str = "cpu", registries=None, **counter_options):
    """A registered counter as an annotator (options: counter = its name, plus the counter's own options)."""
    from ..pseudo_labels import CounterAnnotator

    if registries is None:
        from ..plugins import get_registries
        registries = get_registries()
    return CounterAnnotator(registries.counters.get(counter).factory(device=device, **counter_options))


@hookimpl
def harness_register_generators(register):
    register(GeneratorSpec("stable-diffusion", _stable_diffusion, aliases=("sd",), modes=("text", "image"),
                           build_args=("device", "cache_root"),
                           description="diffusers Stable Diffusion, text-to-image and img2img (hub id, folder, "
                                       "or 'tiny')",
                           tiny_options={"model": "tiny", "steps": 2, "max_side": 32}))


@hookimpl
def harness_register_annotators(register):
    register(AnnotatorSpec("heavyweight-counter", _heavyweight_counter, build_args=("device", "registries"),
                           description="a registered (pretrained) counter as a pseudo-labeller (PromptMix f_ann)",
                           tiny_options={"counter": "mcnn-sha", "weights": "random"}))


@hookimpl
def harness_register_tiny_models(register):
    from ..models.hub import CORE_TINY_BUILDERS, TINY_VERSION

    for kind, build in CORE_TINY_BUILDERS.items():
        register(TinyModelSpec(kind, build, version=TINY_VERSION,
                               description=f"tiny random {kind} built from configs (harness.models.tiny)"))
