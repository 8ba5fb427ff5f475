"""GauGAN training on the core loop (discriminator then generator, each on its own parameters; resume equals an
uninterrupted run) and the ``gaugan`` generator component (seeds as style vectors, masks validated in one line,
weights files, a key that names the weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import ConfigError, DataError, GenerationRequest, LoopConfig, WeightsError, train
from harness_spade.generator import GauGANGenerator, load_generator, save_generator, state_sha256
from harness_spade.training import GauGANOptions, GauGANTask, prepare_item, square_mask, train_gaugan

OPTS = GauGANOptions(crop_size=64, load_size=72, ngf=2, ndf=4, spade_hidden=8, z_dim=8, epochs=2, batch_size=2,
                     checkpoint_every_epochs=1)


def items(n=3):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
        mask = np.zeros((90, 120), np.uint8)
        mask[30:60, 40:100] = 1
        out.append(prepare_item(img, mask, OPTS.load))
    return out


def test_prepare_item_and_square_mask():
    img, lab = items(1)[0]
    assert img.shape == (72, 72, 3) and lab.shape == (72, 72) and set(np.unique(lab)) == {0, 1}  # nearest: no blend
    sq = square_mask(np.eye(40, 60, dtype=np.uint8) * 2, 32)
    assert sq.shape == (32, 32) and set(np.unique(sq)) <= {0, 2}


def test_discriminator_then_generator_each_on_its_own_parameters():
    torch.manual_seed(0)
    task = GauGANTask(items(), 2, OPTS, seed=0)
    order = []
    d_loss, g_loss = task.d_loss, task.g_loss
    task.d_loss = lambda b, s: (order.append("d"), d_loss(b, s))[1]
    task.g_loss = lambda b, s: (order.append("g"), g_loss(b, s))[1]
    objs = task.objectives()
    assert [o.name for o in objs] == ["discriminator", "generator"]
    assert [o.optim.lr for o in objs] == [4e-4, 1e-4] and all(o.optim.betas == (0.0, 0.9) for o in objs)
    g_ids = {id(p) for p in objs[1].params}
    assert g_ids == {id(p) for p in list(task.generator.parameters()) + list(task.encoder.parameters())}
    assert not g_ids & {id(p) for p in task.discriminator.parameters()}
    before = {n: state_sha256(m) for n, m in task.modules().items()}
    res = train(task, LoopConfig(steps=3, checkpoint_every=None, log_every=1))
    assert order == ["d", "g"] * 3 and res.steps_done == 3
    assert all(state_sha256(m) != before[n] for n, m in task.modules().items())  # G, D and the encoder moved
    rec = [h for h in res.history if "generator" in h][-1]
    assert {"discriminator/real", "discriminator/fake", "generator/gan", "generator/feat", "generator/kld"} <= set(rec)
    seg, real = task.batch(0, np.random.default_rng(0))
    assert seg.shape == (2, 2, 64, 64) and real.shape == (2, 3, 64, 64) and float(real.abs().max()) <= 1


def test_training_resumes_to_the_uninterrupted_weights(tmp_path):
    full = train_gaugan(items(), 2, OPTS, seed=3, checkpoint_dir=tmp_path / "a")
    assert full.steps_done == 4 and (tmp_path / "a" / "gaugan").is_dir()

    class Stop(Exception):
        pass

    def stop(step):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train_gaugan(items(), 2, OPTS, seed=3, checkpoint_dir=tmp_path / "b", on_checkpoint=stop)
    resumed = train_gaugan(items(), 2, OPTS, seed=3, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 2 and resumed.steps_done == 4
    assert state_sha256(resumed.generator) == state_sha256(full.generator)
    with pytest.raises(ConfigError, match="crop_size"):
        train_gaugan(items(), 2, GauGANOptions(crop_size=48), seed=0)


def test_generator_component_seeds_masks_and_weights(tmp_path):
    gen = GauGANGenerator("tiny")
    assert gen.modes == ("mask",) and gen.multiple == 32 and gen.label_nc == 2
    mask = np.zeros((64, 96), np.uint8)
    mask[20:40, 30:70] = 1
    reqs = [GenerationRequest(seed=s, size=(64, 96), label_mask=mask) for s in (1, 2, 1)]
    a, b, a2 = (o.image for o in gen.generate(reqs))
    assert a.shape == (64, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, a2) and not np.array_equal(a, b)  # the seed is the style vector
    assert gen.output_size(32, 48) == (32, 64) and gen.generate([GenerationRequest(seed=0, size=(32, 48))])[0] \
        .image.shape == (32, 64, 3)  # no mask: all background
    bad = mask.copy()
    bad[0, 0] = 7
    with pytest.raises(DataError, match=r"id\(s\) 7 outside 0\.\.1 \(the generator has 2 labels\)") as err:
        gen.generate([GenerationRequest(seed=0, size=(64, 96), label_mask=bad)])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not init images"):
        gen.generate([GenerationRequest(seed=0, size=(64, 96), init_image=np.zeros((8, 8, 3), np.uint8),
                                        strength=0.5)])

    # a trained generator's weights file: the key names its weights, the provenance its training data
    task = GauGANTask(items(), 2, OPTS, seed=0)
    train(task, LoopConfig(steps=1, checkpoint_every=None))
    path = tmp_path / "g.pt"
    save_generator(path, task.generator, OPTS.generator_config(2), label_names=("background", "dense crowd"),
                   trained_on=["SHB"])
    loaded = GauGANGenerator(str(path))
    assert loaded.key()["weights_sha256"] == state_sha256(task.generator) != gen.key()["weights_sha256"]
    assert loaded.provenance.trained_on == frozenset({"SHB"}) and loaded.multiple == 32
    out = loaded.generate([GenerationRequest(seed=5, size=(64, 64), label_mask=mask[:, :64])])[0].image
    with torch.no_grad():
        from harness_spade.gaugan import one_hot

        ref = task.generator.eval()(one_hot(mask[:, :64], 2), loaded.style(5))[0]
    assert np.array_equal(out, ((ref.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    with torch.no_grad():
        next(task.generator.parameters()).add_(0.01)
    save_generator(path, task.generator, OPTS.generator_config(2), label_names=("background", "dense crowd"))
    assert GauGANGenerator(str(path)).key() != loaded.key()
    for bad_path, pattern in ((tmp_path / "none.pt", "do not exist"), (tmp_path / "junk.pt", "cannot be read")):
        if bad_path.name == "junk.pt":
            bad_path.write_bytes(b"junk")
        with pytest.raises(WeightsError, match=pattern) as err:
            load_generator(bad_path)
        assert "\n" not in str(err.value)
