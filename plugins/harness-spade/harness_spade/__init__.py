"""harness-spade: the Aarhus report's SPADE variant of PromptMix for crowd-harness (semantic masks of real source
images -> a GauGAN mask-to-image generator trained in the run -> the shared annotate / filter / mix pipeline).

Modules: :mod:`.masks` (HM / CM / SS segmenters, stacking, mask files), :mod:`.gaugan` (networks and losses),
:mod:`.training` (GauGAN on the core loop), :mod:`.generator` (the ``gaugan`` generator component),
:mod:`.strategy` (the ``spade`` strategy), :mod:`.inspect` (``harness spade inspect``), :mod:`.plugin` (hooks).
"""
