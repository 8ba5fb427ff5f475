"""harness-syrac: SYRAC — "Synthesize, Rank, and Count" (D'Alessandro et al., 2023) as a crowd-harness plugin.

Unsupervised crowd counting without any label: Stable Diffusion removes people from real unlabelled images
(img2img, ranking pairs real ≥ synthetic, §3.1) and draws images of "A group of {N} people" (noisy counts, §3.2);
a Siamese ResNet with a non-negative rank head is pre-trained on the pairs (§4.1), a non-negative linear probe
without intercept maps its frozen features to the noisy counts (§4.2), and an image is counted as the sum over a
g × g grid of patches, each resized back to the full input size (§4.3). Modules:

- :mod:`harness_syrac.config`: the options dataclasses and the ``smoke`` / ``paper`` / tiny profiles;
- :mod:`harness_syrac.data`: generation requests, the pair list and the noisy-count set, cached and resumable;
- :mod:`harness_syrac.model`: encoder + rank head, non-negativity projection, ranking loss, augmentations,
  NNLS probe, patch grid and the count-only counter;
- :mod:`harness_syrac.training`: rank pre-training and end-to-end regression on the core training loop;
- :mod:`harness_syrac.strategy`: the ``syrac`` strategy;
- :mod:`harness_syrac.inspect`: ``harness syrac inspect RUN_DIR``;
- :mod:`harness_syrac.plugin`: hook implementations (entry point ``syrac`` of the ``harness`` group).
"""
__version__ = "0.1.0"
