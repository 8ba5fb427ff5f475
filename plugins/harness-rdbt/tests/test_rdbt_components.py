"""RDBT components on tiny inputs: network shapes, losses on hand cases, Ψ/Φ transforms, fusion, NMS, patches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError, DataError
from harness_rdbt.config import PAPER, SMOKE, RDBTConfig
from harness_rdbt.losses import csp_loss, dms_ssim_loss, focal_mse_loss
from harness_rdbt.models import CSPNet, DSSINet, PhiUNetPP
from harness_rdbt.training import loc_map, phi_input
from harness_rdbt.transforms import (Detections, confidence_map, csp_targets, decode_csp, fuse_density,
                                     fuse_detections, head_sizes, nms_detections, phi_points, psi, random_patches,
                                     restore_sizes, select_density_patches, select_detection_patches)


# ------------------------------------------------------------------------------------------ networks


def test_dssinet_output_is_stride_8_and_last_two_layers_are_the_head():
    torch.manual_seed(0)
    net = DSSINet(width=0.0625, scales=(1.0, 0.5), crf_iterations=1)
    out = net(torch.randn(2, 3, 40, 56))
    assert out.shape == (2, 1, 5, 7)
    last = net.last_two_layers()
    assert last[-1] is net.output and last[0].out_channels == net.output.in_channels


def test_dssinet_rejects_scales_without_the_full_resolution_branch():
    with pytest.raises(ConfigError, match="scales must start with 1.0"):
        DSSINet(width=0.0625, scales=(0.5, 1.0))


def test_csp_heads_at_stride_4_for_odd_sizes():
    torch.manual_seed(0)
    net = CSPNet("resnet50", width=0.0625).eval()
    with torch.no_grad():
        c, s, o = net(torch.randn(1, 3, 50, 70))
    assert c.shape == (1, 1, 13, 18) and s.shape == (1, 1, 13, 18) and o.shape == (1, 2, 13, 18)
    # focal-loss prior: sigmoid(centre) starts near 0.01
    assert abs(float(torch.sigmoid(c).mean()) - 0.01) < 0.01


def test_csp_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be built by timm"):
        CSPNet("no-such-net", width=0.0625)


def test_phi_unetpp_keeps_the_map_size():
    torch.manual_seed(0)
    net = PhiUNetPP(width=0.0625)
    assert net(torch.rand(2, 1, 20, 28)).shape == (2, 1, 20, 28)


# ------------------------------------------------------------------------------------------ losses


def test_focal_mse_hand_case():
    # logits 0 -> s = 0.5: head pixel 1·0.5²·0.5² = 0.0625; background 0.1·0.5²·0.5² = 0.00625; mean of the two
    loss = focal_mse_loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]]))
    assert float(loss) == pytest.approx((0.0625 + 0.00625) / 2)


def test_focal_mse_downweights_easy_pixels():
    tgt = torch.tensor([[[[1.0, 0.0]]]])
    easy = focal_mse_loss(torch.tensor([[[[4.0, -4.0]]]]), tgt)
    hard = focal_mse_loss(torch.tensor([[[[-4.0, 4.0]]]]), tgt)
    assert float(easy) < 1e-5 < float(hard)


def test_dms_ssim_is_zero_for_identical_maps_and_grows_with_mismatch():
    torch.manual_seed(0)
    a = torch.rand(1, 1, 24, 24)
    assert float(dms_ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-5)
    near = float(dms_ssim_loss(a + 0.05 * torch.rand_like(a), a))
    far = float(dms_ssim_loss(torch.rand_like(a), a))
    assert 0 < near < far <= 1


def test_csp_loss_prefers_the_right_centre():
    t = {k: torch.from_numpy(v)[None] for k, v in csp_targets([[10.0, 10.0]], [8.0], (32, 32)).items()}
    good = torch.full((1, 1, 8, 8), -6.0)
    good[0, 0, 2, 2] = 6.0
    bad = torch.full((1, 1, 8, 8), -6.0)
    bad[0, 0, 6, 6] = 6.0
    scale = torch.full((1, 1, 8, 8), math.log(2.0))
    off = torch.full((1, 2, 8, 8), 0.5)
    lg, parts = csp_loss(good, scale, off, t)
    lb, _ = csp_loss(bad, scale, off, t)
    assert float(lg) < float(lb)
    assert parts["scale"] == pytest.approx(0.0, abs=1e-6)  # log(8 / 4) is the target at the head cell


# ------------------------------------------------------------------------------------------ transforms


def test_head_sizes_are_clipped_nearest_neighbour_distances():
    pts = np.array([[0.0, 0.0], [3.0, 4.0], [100.0, 0.0]])
    assert head_sizes(pts, min_size=2, max_size=60).tolist() == [5.0, 5.0, 60.0]
    assert head_sizes(pts[:1], default=12.0).tolist() == [12.0]
    with pytest.raises(DataError):
        head_sizes(np.ones((3, 3)))


def test_csp_targets_mark_each_head_cell_with_scale_and_offset():
    t = csp_targets([[9.0, 5.0], [30.0, 30.0]], [8.0, 16.0], (32, 40))
    assert t["pos"].shape == (1, 8, 10) and t["pos"].sum() == 2
    assert t["pos"][0, 1, 2] == 1 and t["offset"][:, 1, 2] == pytest.approx([0.25, 0.25])
    assert t["scale"][0, 7, 7] == pytest.approx(math.log(4.0))
    assert t["gauss"].max() == 1.0


def test_decode_csp_round_trips_targets_and_nms_merges_duplicates():
    t = csp_targets([[9.0, 5.0], [30.0, 30.0]], [8.0, 16.0], (32, 40))
    logits = torch.from_numpy(np.where(t["pos"] > 0, 5.0, -8.0).astype(np.float32))
    logits[0, 1, 3] = 3.0  # a weaker peak at (12, 4), 3 px from the first head: IoU 0.38 -> suppressed by NMS
    scale = torch.from_numpy(t["scale"])
    scale[0, 1, 3] = math.log(2.0)
    det = decode_csp(logits, scale, torch.from_numpy(t["offset"]), nms_iou=0.3)
    assert len(det) == 2 and det.count == 2
    got = det.points[np.argsort(det.points[:, 0])]
    assert got == pytest.approx(np.array([[9.0, 5.0], [30.0, 30.0]]))
    assert sorted(det.sizes.tolist()) == pytest.approx([8.0, 16.0])


def test_nms_merges_overlapping_boxes_and_keeps_distant_ones():
    det = Detections([[10, 10], [11, 10], [40, 40]], [0.9, 0.8, 0.7], [8, 8, 8])
    kept = nms_detections(det, 0.5)
    assert kept.points.tolist() == [[10, 10], [40, 40]] and kept.scores.tolist() == [0.9, 0.7]


def test_psi_preserves_the_count_and_follows_box_sizes():
    pts, sizes = np.array([[20.0, 20.0], [50.0, 30.0], [2.0, 2.0]]), np.array([10.0, 30.0, 10.0])
    dens = psi(pts, sizes, (48, 64), beta=0.3)
    assert dens.shape == (48, 64) and float(dens.sum()) == pytest.approx(3.0, rel=1e-5)
    assert dens[20, 20] > dens[30, 50]  # the larger head spreads its unit mass wider
    pooled = psi(pts, sizes, (48, 64), beta=0.3, stride=8)
    assert pooled.shape == (6, 8) and float(pooled.sum()) == pytest.approx(3.0, rel=1e-5)


def test_phi_points_binarise_and_merge_within_10px():
    prob = np.zeros((40, 40))
    prob[10, 10], prob[12, 13] = 0.9, 0.6  # within 10 px: one head
    prob[30, 30] = 0.5
    prob[5, 35] = 0.15  # below the 0.2 threshold
    pts, scores = phi_points(prob, stride=1, threshold=0.2, merge_px=10)
    assert scores.tolist() == [0.9, 0.5]
    assert pts.tolist() == [[10.5, 10.5], [30.5, 30.5]]


def test_density_fusion_eq8_weights_by_detection_confidence():
    W = confidence_map([[12.0, 12.0]], [0.8], [10.0], (4, 4), stride=8, beta=0.3)
    assert W[1, 1] == pytest.approx(0.8) and W[3, 3] == 0  # k x k area around the centre only
    R, P = np.full((4, 4), 2.0, np.float32), np.full((4, 4), 1.0, np.float32)
    fused = fuse_density(R, P, W)
    assert fused[1, 1] == pytest.approx(0.2 * 2 + 0.8 * 1) and fused[3, 3] == 2.0
    with pytest.raises(DataError):
        fuse_density(R, P[:2], W)


def test_fuse_detections_restores_scales_and_suppresses_duplicates():
    det = Detections([[10.0, 70.0], [60.0, 10.0]], [0.9, 0.4], [8.0, 8.0], counted=[True, False])
    scale_map = np.full((20, 20), 12.0)
    phi_pts = np.array([[11.0, 70.0], [30.0, 10.0], [50.0, 75.0]])  # first duplicates D's head
    fused = fuse_detections(det, phi_pts, [0.7, 0.6, 0.5], (80, 80), scale_map=scale_map, nms_iou=0.3,
                            min_size=2, max_size=40)
    assert len(fused) == 4 and fused.count == 3  # D's low-score detection kept for AP, not counted
    phi = fused.subset(fused.origin == 1)
    upper = phi.subset(phi.points[:, 1] < 40)
    lower = phi.subset(phi.points[:, 1] >= 40)
    assert lower.sizes.tolist() == [12.0]  # lower half: D's scale map
    assert upper.sizes.tolist() == [40.0]  # upper half: NN distance (62.9 px to (11, 70)), clipped to max 40
    assert restore_sizes(np.zeros((0, 2)), (8, 8), scale_map=None).shape == (0,)


def test_density_patches_come_from_the_50_70_percent_range():
    dens = np.zeros((10, 10), np.float32)  # stride 8, image 80 x 80, patches 16 px -> 25 tiles of 2 x 2 cells
    for i in range(25):
        r, c = divmod(i, 5)
        dens[2 * r, 2 * c] = i  # tile i has count i
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        tiles = select_density_patches(dens, 8, (80, 80), patch=16, n=2, low=0.5, high=0.7, rng=rng)
        assert len(tiles) == 2
        seen |= {int(dens[y // 8:y // 8 + 2, x // 8:x // 8 + 2].sum()) for y, x in tiles}
    assert seen <= set(range(12, 17)) and len(seen) > 2  # ranks 12..16 of 0..24 are the 50-70 % range


def test_detection_patches_pick_highest_mean_confidence():
    det = Detections([[5, 5], [6, 20], [40, 40], [70, 70]], [0.3, 0.5, 0.95, 0.7], [4, 4, 4, 4])
    tiles = select_detection_patches(det, (80, 80), patch=32, n=2)
    # grid starts 0, 32, 48 (last tile shifted inside); means: (32, 32) 0.95, (48, 48) 0.7, (0, 0) 0.4
    assert tiles == [(32, 32), (48, 48)]


def test_random_patches_are_distinct_tiles():
    tiles = random_patches((64, 64), patch=16, n=2, rng=np.random.default_rng(1))
    assert len(set(tiles)) == 2 and all(y % 16 == 0 and x % 16 == 0 for y, x in tiles)


def test_phi_input_keeps_the_count():
    d8 = torch.rand(1, 1, 4, 5)
    x = phi_input(d8, (16, 20), 2)
    assert x.shape == (1, 1, 16, 20) and float(x.sum()) == pytest.approx(float(d8.sum()), rel=1e-5)
    assert loc_map([[3.0, 5.0], [3.5, 5.5]], (8, 8), 2).sum() == 1  # both heads in one cell


# ------------------------------------------------------------------------------------------ options


def test_profiles_are_valid_and_bad_options_are_one_line_errors():
    assert RDBTConfig.from_options(dict(SMOKE)).cycles == 2
    assert RDBTConfig.from_options(dict(PAPER)).r_finetune_lr == 1e-6
    with pytest.raises(ConfigError, match="unknown option"):
        RDBTConfig.from_options({"cyclez": 3})
    with pytest.raises(ConfigError, match="patch_size"):
        RDBTConfig.from_options({"patch_size": 100})
    with pytest.raises(ConfigError, match="density_range"):
        RDBTConfig.from_options({"density_range": [0.8, 0.5]})


def test_dilated_phi_adds_csrnet_backend_as_the_deepest_unetpp_level():
    """RDBT §3.3: Φ is "the nested UNet with dilated VGG-16 structure [14]" ([14] = CSRNet: VGG-16's first 10
    convolutions and a back end of 3×3 convolutions with dilation 2, Li et al. 2018 Table 3 B)."""
    from harness_rdbt.models import CSRNET_BACKEND, PhiUNetPP

    plain, dilated = PhiUNetPP(0.125), PhiUNetPP(0.125, dilated=True)
    convs = [m for m in dilated.backend if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(CSRNET_BACKEND) == 6 and all(c.dilation == (2, 2) for c in convs)
    assert [c.out_channels for c in convs] == [max(4, round(v * 0.125)) for v in CSRNET_BACKEND]
    assert not hasattr(plain, "backend") and hasattr(dilated, "x04")
    x = torch.rand(1, 1, 37, 50)
    assert dilated(x).shape == plain(x).shape == (1, 1, 37, 50)
    full = PhiUNetPP(1.0, dilated=True)
    assert full.backend[0].in_channels == 512 and full.x31[0].in_channels == 512 + 64
