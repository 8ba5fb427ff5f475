"""GauGAN's pieces on hand cases: SPADE's shapes and its (1 + γ) modulation, the residual block, spectral norm,
generator / encoder / discriminator shapes, the hinge, feature-matching and KL losses, one-hot labels (ids out of
range refused in one line), and the perceptual loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from harness import DataError, WeightsError
from harness_spade.gaugan import (SPADE, ConvEncoder, MultiscaleDiscriminator, SPADEGenerator, SPADEResBlock, VGGLoss,
                                  feature_matching_loss, hinge_d_loss, hinge_g_loss, kld_loss, load_vgg19_features,
                                  one_hot)


def _instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def test_spade_shapes_and_modulation_by_hand():
    torch.manual_seed(0)
    block = SPADE(8, 3, hidden=16, norm="instance")
    x = torch.randn(2, 8, 6, 10) * 3 + 1
    seg = one_hot(torch.randint(0, 3, (2, 24, 40)), 3)  # label map at 4x the feature resolution
    gamma, beta = block.modulation(seg, x.shape[2:])
    assert gamma.shape == beta.shape == x.shape
    assert block(x, seg).shape == x.shape
    assert block.mlp_shared[0].out_channels == 16 and isinstance(block.mlp_shared[1], nn.ReLU)
    # γ = β = 0 (zeroed convs): the output is the parameter-free normalised input
    for conv in (block.mlp_gamma, block.mlp_beta):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    torch.testing.assert_close(block(x, seg), _instance_norm(x), atol=1e-5, rtol=1e-5)
    # γ = 1, β = 0.5 everywhere: out = norm(x) · (1 + 1) + 0.5 (the "1 +" keeps γ = 0 an identity)
    nn.init.constant_(block.mlp_gamma.bias, 1.0)
    nn.init.constant_(block.mlp_beta.bias, 0.5)
    torch.testing.assert_close(block(x, seg), 2 * _instance_norm(x) + 0.5, atol=1e-5, rtol=1e-5)


def test_spade_follows_the_label_map_spatially():
    torch.manual_seed(0)
    block = SPADE(4, 2, hidden=8, norm="batch").eval()  # batch norm in eval: running stats 0 / 1 (identity)
    x = torch.zeros(1, 4, 8, 16)
    labels = torch.zeros(1, 8, 16, dtype=torch.long)
    labels[:, :, 8:] = 1
    out = block(x, one_hot(labels, 2))  # norm(0) = 0: out = β(m), a function of the labels
    # two stacked 3×3 convs see 2 px: blocks 3..4 and 11..12 (rows 3..4) see one label each and no padding
    left, right = out[0, :, 3:5, 3:5].flatten(1), out[0, :, 3:5, 11:13].flatten(1)
    assert torch.allclose(left, left[:, :1].expand_as(left), atol=1e-6)
    assert torch.allclose(right, right[:, :1].expand_as(right), atol=1e-6)
    assert not torch.allclose(left[:, 0], right[:, 0])


def test_resblock_shortcut_and_spectral_norm():
    torch.manual_seed(0)
    same, grow = SPADEResBlock(8, 8, 2, hidden=8), SPADEResBlock(8, 4, 2, hidden=8)
    assert not same.learned_shortcut and grow.learned_shortcut and not hasattr(same, "conv_s")
    x, seg = torch.randn(2, 8, 5, 7), one_hot(torch.randint(0, 2, (2, 5, 7)), 2)
    assert same(x, seg).shape == (2, 8, 5, 7) and grow(x, seg).shape == (2, 4, 5, 7)
    assert grow.conv_0.weight.shape == (4, 8, 3, 3)  # fmiddle = min(fin, fout)
    for _ in range(30):  # power iterations run in training-mode forward passes
        grow(x, seg)
    for conv in (grow.conv_0, grow.conv_1, grow.conv_s):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("use_vae", [True, False])
def test_generator_shapes_range_and_style(use_vae):
    torch.manual_seed(0)
    g = SPADEGenerator(3, ngf=2, hidden=8, z_dim=8, base=2, use_vae=use_vae).eval()
    assert g.multiple == 32
    seg = one_hot(torch.randint(0, 3, (1, 64, 96)), 3)  # not the 64×64 training size: the start map is resized
    z1, z2 = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad():
        a, b, a2 = g(seg, z1), g(seg, z2), g(seg, z1)
    assert a.shape == (1, 3, 64, 96) and float(a.abs().max()) <= 1.0
    assert torch.equal(a, a2)
    assert torch.equal(a, b) != use_vae  # the style vector changes the image only with the VAE
    with pytest.raises(DataError, match="not a multiple of 32"):
        g(one_hot(torch.zeros(1, 40, 64, dtype=torch.long), 3))
    most = SPADEGenerator(2, ngf=2, hidden=4, z_dim=4, base=1, upsampling="most").eval()
    assert most.multiple == 128 and most(one_hot(torch.zeros(1, 128, 128, dtype=torch.long), 2)).shape[-1] == 128


def test_encoder_and_multiscale_discriminator_shapes():
    torch.manual_seed(0)
    enc = ConvEncoder(ngf=2, z_dim=8, crop_size=64)
    assert enc.size == 128 and len(enc.layers) == 5  # crops below 256: five layers on a 128-px input
    assert len(ConvEncoder(ngf=2, z_dim=8, crop_size=256).layers) == 6
    mu, logvar = enc(torch.randn(3, 3, 64, 64))
    assert mu.shape == logvar.shape == (3, 8)
    d = MultiscaleDiscriminator(5, ndf=4, n_layers=4, num_d=2)
    out = d(torch.randn(2, 5, 64, 64))
    assert len(out) == 2 and all(len(feats) == 5 for feats in out)  # 4 layers + the logits
    assert [f.shape[1] for f in out[0]] == [4, 8, 16, 32, 1]
    assert out[0][0].shape[-1] == 33 and out[1][0].shape[-1] == 17  # k4 s2 p2; the second scale is pooled ×2
    assert out[0][-1].shape[0] == 2 and out[0][3].shape[-1] == out[0][2].shape[-1] + 1  # last middle layer: stride 1


def test_hinge_losses_on_hand_cases():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # D: mean(relu(1 − real)) + mean(relu(1 + fake)) = (0 + 0.5) / 2 + (0 + 1.5) / 2
    assert float(hinge_d_loss(real, fake)) == pytest.approx(1.0)
    assert float(hinge_g_loss(fake)) == pytest.approx(0.75)  # −mean(fake)
    # a confident, correct discriminator pays nothing; averaged over two discriminators
    assert float(hinge_d_loss([torch.full((3,), 1.5)] * 2, [torch.full((3,), -1.0)] * 2)) == 0.0
    two = hinge_d_loss([[torch.zeros(1), torch.tensor([2.0])], [torch.zeros(1), torch.tensor([0.0])]],
                       [[torch.zeros(1), torch.tensor([-1.0])], [torch.zeros(1), torch.tensor([1.0])]])
    assert float(two) == pytest.approx((0 + 1) / 2 + (0 + 2) / 2)  # only each list's last entry (the logits)


def test_feature_matching_and_kld_by_hand():
    real = [[torch.ones(1, 2, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1)]] * 2
    fake = [[torch.full((1, 2, 2, 2), 3.0), torch.ones(1, 1, 2, 2), torch.full((1, 1), 9.0)]] * 2
    # per discriminator: L1 2 + L1 1 (the logits are left out); summed over 2, × 10 / 2
    assert float(feature_matching_loss(fake, real, 10.0)) == pytest.approx((2 + 1) * 2 * 10 / 2)
    assert float(feature_matching_loss(real, real)) == 0.0
    assert float(kld_loss(torch.zeros(4, 8), torch.zeros(4, 8))) == 0.0
    # −½ Σ (1 + log σ² − μ² − σ²) with μ = 1, log σ² = 0: ½ per dimension, summed over 2 × 3, × 0.05
    assert float(kld_loss(torch.ones(2, 3), torch.zeros(2, 3))) == pytest.approx(0.5 * 6 * 0.05)


def test_one_hot_and_out_of_range_ids():
    lab = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    oh = one_hot(lab, 3)
    assert oh.shape == (1, 3, 2, 2) and oh.dtype == torch.float32
    assert torch.equal(oh.sum(1), torch.ones(1, 2, 2)) and torch.equal(oh.argmax(1)[0], torch.from_numpy(lab).long())
    assert one_hot(torch.zeros(4, 5, 6, dtype=torch.int32), 2).shape == (4, 2, 5, 6)
    assert torch.equal(one_hot(np.array([[1.0, 0.0]]), 2).argmax(1), torch.tensor([[[1, 0]]]))
    for bad, pattern in ((np.array([[0, 3]]), r"id\(s\) 3 outside 0\.\.2"), (np.array([[-1, 0]]), r"id\(s\) -1"),
                         (np.array([[0.5, 1.0]]), "non-integer"), (np.zeros((2, 2, 2, 2), int), "shape")):
        with pytest.raises(DataError, match=pattern) as err:
            one_hot(bad, 3)
        assert "\n" not in str(err.value)


def test_vgg_loss_and_missing_weights(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    loss = VGGLoss(make_layers(cfgs["E"]))
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == 0.0 and float(loss(x, y)) > 0
    assert not any(p.requires_grad for p in loss.parameters())
    with pytest.raises(WeightsError, match="does not exist.*vgg_weights") as err:
        load_vgg19_features(str(tmp_path / "vgg19.pth"))
    assert "\n" not in str(err.value)
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_vgg19_features(str(tmp_path / "junk.pth"))


def test_vgg19_imagenet_file_of_torchvision_layout_loads(tmp_path, monkeypatch):
    """The perceptual loss's VGG-19 (SPADE's VGGLoss) from torchvision's file layout (``features.N.*`` +
    ``classifier.*``), found as ``$HARNESS_WEIGHTS/imagenet/vgg19-dcbb9e9d.pth`` by the core; absent, one line."""
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(WeightsError, match="vgg19-dcbb9e9d.pth.*not found") as err:
        load_vgg19_features("imagenet")
    assert "\n" not in str(err.value)
    torch.manual_seed(3)
    ref = make_layers(cfgs["E"])
    state = {f"features.{k}": v for k, v in ref.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    (tmp_path / "imagenet").mkdir()
    torch.save(state, tmp_path / "imagenet" / "vgg19-dcbb9e9d.pth")
    got = load_vgg19_features("imagenet")
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in got.state_dict().items())


def nvlabs_generator_state(semantic_nc: int = 184, nf: int = 4) -> dict:
    """A state dict with the key layout and shapes of NVlabs/SPADE's ``SPADEGenerator`` as its released models save
    it (``models/networks/generator.py`` without the VAE: ``fc`` a 3 × 3 conv of the label map; ``architecture.py``'s
    ``SPADEResnetBlock`` with spectral norm on ``conv_0``, ``conv_1``, ``conv_s``; ``normalization.py``'s ``SPADE``
    with ``SynchronizedBatchNorm2d(affine=False)`` and the hard-coded ``nhidden = 128``), written here from those
    files with random values (COCO-Stuff's 184 label channels by default)."""
    g = torch.Generator().manual_seed(1)
    state = {"fc.weight": torch.randn(16 * nf, semantic_nc, 3, 3, generator=g), "fc.bias": torch.randn(16 * nf, generator=g)}

    def conv_sn(prefix, cout, cin, k, bias=True):
        state[f"{prefix}.weight_orig"] = torch.randn(cout, cin, k, k, generator=g)
        state[f"{prefix}.weight_u"] = torch.randn(cout, generator=g)
        state[f"{prefix}.weight_v"] = torch.randn(cin * k * k, generator=g)
        if bias:
            state[f"{prefix}.bias"] = torch.randn(cout, generator=g)

    def spade(prefix, c):
        state.update({f"{prefix}.param_free_norm.running_mean": torch.randn(c, generator=g),
                      f"{prefix}.param_free_norm.running_var": torch.rand(c, generator=g) + 0.5,
                      f"{prefix}.param_free_norm.num_batches_tracked": torch.tensor(1000),
                      f"{prefix}.mlp_shared.0.weight": torch.randn(128, semantic_nc, 3, 3, generator=g),
                      f"{prefix}.mlp_shared.0.bias": torch.randn(128, generator=g),
                      f"{prefix}.mlp_gamma.weight": torch.randn(c, 128, 3, 3, generator=g),
                      f"{prefix}.mlp_gamma.bias": torch.randn(c, generator=g),
                      f"{prefix}.mlp_beta.weight": torch.randn(c, 128, 3, 3, generator=g),
                      f"{prefix}.mlp_beta.bias": torch.randn(c, generator=g)})

    blocks = [("head_0", 16, 16), ("G_middle_0", 16, 16), ("G_middle_1", 16, 16), ("up_0", 16, 8), ("up_1", 8, 4),
              ("up_2", 4, 2), ("up_3", 2, 1)]
    for name, fin, fout in blocks:
        fin, fout = fin * nf, fout * nf
        fmid = min(fin, fout)
        conv_sn(f"{name}.conv_0", fmid, fin, 3)
        conv_sn(f"{name}.conv_1", fout, fmid, 3)
        spade(f"{name}.norm_0", fin)
        spade(f"{name}.norm_1", fmid)
        if fin != fout:
            conv_sn(f"{name}.conv_s", fout, fin, 1, bias=False)
            spade(f"{name}.norm_s", fin)
    state["conv_img.weight"] = torch.randn(3, nf, 3, 3, generator=g)
    state["conv_img.bias"] = torch.randn(3, generator=g)
    return state


def test_gaugan_transfer_from_an_nvlabs_checkpoint_keeps_all_but_the_label_inputs(tmp_path):
    from harness_spade.training import transfer_generator

    state = nvlabs_generator_state()
    folder = tmp_path / "checkpoints" / "coco_pretrained"
    folder.mkdir(parents=True)
    torch.save(state, folder / "latest_net_G.pth")  # BaseModel.save_network: a plain state dict
    torch.manual_seed(0)
    ours = SPADEGenerator(23, ngf=4, use_vae=True, z_dim=16, base=4, hidden=128)  # the report's 23-label masks
    report = transfer_generator(ours, str(folder))
    loaded = ours.state_dict()
    # everything but the label-map inputs and the VAE's fc comes from the file, statistics included
    for ours_key, key in (("up_0.conv_0.parametrizations.weight.original", "up_0.conv_0.weight_orig"),
                          ("up_0.conv_0.parametrizations.weight.0._u", "up_0.conv_0.weight_u"),
                          ("up_0.conv_0.parametrizations.weight.0._v", "up_0.conv_0.weight_v"),
                          ("up_2.conv_s.parametrizations.weight.original", "up_2.conv_s.weight_orig"),
                          ("conv_img.weight", "conv_img.weight"), ("head_0.norm_0.mlp_gamma.weight",) * 2,
                          ("G_middle_1.norm_1.param_free_norm.running_var",) * 2, ("up_3.norm_s.mlp_shared.0.bias",) * 2):
        assert torch.equal(loaded[ours_key], state[key]), key
    label_inputs = sorted(k for k in state if k.endswith("mlp_shared.0.weight"))
    assert report["reinitialised"] == sorted(["fc.bias", "fc.weight"] + label_inputs)
    assert set(report["unused"]) == {"fc.weight", "fc.bias", *label_inputs}  # 184-channel inputs, the conv fc
    assert report["loaded"] == len(state) - len(report["unused"]) and len(report["sha256"]) == 64
    seg = one_hot(torch.randint(0, 23, (1, 64, 64)), 23)
    ours.eval()
    assert ours(seg).shape == (1, 3, 64, 64)
    with pytest.raises(WeightsError, match="ngf = 8"):  # another width shares no weight
        transfer_generator(SPADEGenerator(23, ngf=8, use_vae=True, z_dim=16, base=4), str(folder))
    with pytest.raises(WeightsError, match="NVlabs/SPADE README"):  # absent: one line saying where to put it
        transfer_generator(ours, "coco_pretrained")
