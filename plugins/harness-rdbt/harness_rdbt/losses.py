"""Losses of RDBT's three networks.

- :func:`dms_ssim_loss`: dilated multi-scale structural similarity (DSSINet, Liu et al. ICCV 2019, §3.3), used
  to train R and, in RDBT eq. 7, Φ.
- :func:`focal_mse_loss`: RDBT eq. 4–6 (focal MSE for the sparse head-centre map).
- :func:`csp_loss`: CSP's detection loss (Liu et al. CVPR 2019, eq. 1–4): focal centre loss with the Gaussian
  reduction of negatives near heads (torchvision's ``sigmoid_focal_loss``), smooth-L1 scale and offset losses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: DSSINet's dilation rates and the MS-SSIM scale weights (Wang et al. 2003) it uses for them
DMS_DILATIONS = (1, 2, 3, 6, 9)
DMS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss_window(size: int = 5, sigma: float = 1.5, device=None) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(x: torch.Tensor, y: torch.Tensor, dilation: int = 1, c1: float = 1e-4, c2: float = 9e-4) -> torch.Tensor:
    """Local SSIM index of two ``(B, 1, H, W)`` maps with a 5×5 Gaussian window (σ 1.5) dilated by ``dilation``
    (zero padding keeps the size). Returns ``(B, 1, H, W)``; identical maps give 1 everywhere."""
    w = _gauss_window(device=x.device).to(x.dtype)
    pad = 2 * dilation
    conv = lambda t: F.conv2d(t, w, padding=pad, dilation=dilation)  # noqa: E731
    mx, my = conv(x), conv(y)
    vx = conv(x * x) - mx * mx
    vy = conv(y * y) - my * my
    cxy = conv(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def dms_ssim_loss(pred: torch.Tensor, target: torch.Tensor, dilations=DMS_DILATIONS, weights=DMS_WEIGHTS) -> torch.Tensor:
    """Dilated multi-scale SSIM loss (DSSINet eq. 9–10): ``1 − Π_k SSIM_k^{w_k}``, SSIM_k the mean local SSIM
    with the window dilated by ``dilations[k]`` (weights renormalised to sum 1; SSIM clamped to ≥ 1e-6).

    Args:
        pred, target: ``(B, 1, H, W)`` maps on the same scale (e.g. density × density_scale).

    Returns:
        scalar in ``[0, 1)``: 0 for identical maps.
    """
    wsum = float(sum(weights))
    loss = pred.new_tensor(0.0)
    for d, w in zip(dilations, weights):
        s = ssim_map(pred, target, d).mean().clamp_min(1e-6)
        loss = loss + (w / wsum) * torch.log(s)
    return 1.0 - torch.exp(loss)


def focal_mse_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha_pos: float = 1.0,
                   alpha_neg: float = 0.1) -> torch.Tensor:
    """Focal MSE (RDBT eq. 4–6): ``mean_i α_i (1 − p_i)^γ (M_i^D − s_i)²`` with ``s = sigmoid(logits)``,
    ``p_i = s_i`` where ``M_i^D = 1`` else ``1 − s_i``, ``α_i = 1`` (heads) or ``0.1`` (background), γ = 2.

    We read eq. 4's ``Φ(M_i^R)`` as the sigmoid output s (the map compared with the 0–1 target and later
    binarised at 0.2).

    Args:
        logits: ``(B, 1, H, W)`` Φ output before the sigmoid.
        target: ``(B, 1, H, W)`` binary head-centre map M^D.
    """
    s = torch.sigmoid(logits)
    pos = target >= 0.5
    p = torch.where(pos, s, 1 - s)
    alpha = torch.where(pos, torch.full_like(s, alpha_pos), torch.full_like(s, alpha_neg))
    return (alpha * (1 - p) ** gamma * (target - s) ** 2).mean()


def csp_loss(center_logits, scale_pred, offset_pred, targets: dict, beta: float = 4.0,
             weights=(1.0, 1.0, 0.1)) -> tuple[torch.Tensor, dict]:
    """CSP's loss (Liu et al. CVPR 2019, eq. 1–4) on one batch.

    Args:
        center_logits / scale_pred: ``(B, 1, h, w)``; offset_pred ``(B, 2, h, w)`` (outputs of
            :class:`harness_rdbt.models.CSPNet`).
        targets: from :func:`harness_rdbt.transforms.csp_targets`, stacked to ``(B, ...)``: ``pos`` (1 at head
            cells), ``gauss`` (max of Gaussians around heads, for the ``(1 − G)^β`` reduction of negatives),
            ``scale`` (log side / stride), ``offset`` (sub-cell x, y).
        beta: exponent of the negative reduction (4).
        weights: λ_center, λ_scale, λ_offset. CSP uses 0.01 / 1 / 0.1 with a centre loss summed over
            cells; ours is normalised per head, so the default weighs it 1.

    Returns:
        ``(total, {"center", "scale", "offset"})``; each part is normalised by the number of heads (≥ 1).
    """
    from torchvision.ops import sigmoid_focal_loss

    pos, gauss = targets["pos"], targets["gauss"]
    n = pos.sum().clamp_min(1.0)
    focal = sigmoid_focal_loss(center_logits, pos, alpha=-1, gamma=2.0, reduction="none")
    weight = torch.where(pos > 0.5, torch.ones_like(gauss), (1 - gauss) ** beta)
    l_center = (focal * weight).sum() / n
    l_scale = (F.smooth_l1_loss(scale_pred, targets["scale"], reduction="none") * pos).sum() / n
    l_offset = (F.smooth_l1_loss(offset_pred, targets["offset"], reduction="none") * pos).sum() / n
    total = weights[0] * l_center + weights[1] * l_scale + weights[2] * l_offset
    return total, {"center": float(l_center.detach()), "scale": float(l_scale.detach()),
                   "offset": float(l_offset.detach())}
