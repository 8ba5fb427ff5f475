"""harness-promptmix: PromptMix (Bakhtiarnia et al. 2023, as reproduced in the Aarhus report "Using Generated
Images in Crowd Counting") as a crowd-harness plugin: captioner + prompt builder, Stable Diffusion generator,
heavyweight-counter annotators with the quality score q, and the data-mixing strategy ``promptmix``."""

__version__ = "0.1.0"
