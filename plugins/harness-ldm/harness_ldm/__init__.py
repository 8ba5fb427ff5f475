"""harness-ldm: a crowd counter that samples crowd maps with a latent diffusion model conditioned on the RGB image.

"Crowd Counting Using Diffusion-Based Latent Space" (poster; Ahn, Son, Lee, advisor Hong): a VQ first stage E / D
(f = 4: 256 × 256 crowd map -> 3 × 64 × 64 latent), a denoiser ε_θ on the noisy latent concatenated channel-wise with
T(y) (the RGB crop encoded to the latent's size), DDIM sampling (500 steps), decoding, and head points from contour
detection. The pixel-space variant is CrowdDiff's choice (Ranasinghe et al., CVPR 2024). Modules:

- :mod:`harness_ldm.crowdmap`: crowd maps (narrow Gaussian, [-1, 1], normaliser) and contour counting (OpenCV);
- :mod:`harness_ldm.tiling`: pad / tile / stitch whole images (cores that partition the image: no double counts);
- :mod:`harness_ldm.models`: VQModel, T(y), UNet2DModel, DDPM / DDIM schedulers, :class:`~harness_ldm.models.LDMNet`;
- :mod:`harness_ldm.counter`: the stochastic counter with ground-truth-free multi-hypothesis fusion;
- :mod:`harness_ldm.training`: both stages on the core training loop; :mod:`harness_ldm.strategy`: the strategy;
- :mod:`harness_ldm.report`: ``harness ldm steps RUN_DIR`` (MAE and seconds per image against DDIM steps);
- :mod:`harness_ldm.config`: options and profiles; :mod:`harness_ldm.plugin`: hook implementations.
"""
__version__ = "0.1.0"
