"""Density-counter training (the adapter on the core loop): loss decreases, deterministic weights, exact resume,
val-MAE model selection, per-epoch extra samples, scaling, one-line option errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from harness import ConfigError, DensityTrainOptions, EpochExtras, Prediction, Provenance, train_density_counter
from harness.data.synthetic import SyntheticCrowds
from harness.data.transforms import resize_sample, scale_factor
from harness.models.base import TorchDensityCounter
from harness.training import ScaledCounter
from harness.training.density import DensityTask, density_item


def tiny_counter(seed: int = 0) -> TorchDensityCounter:
    """A 2-conv density network with stride 2 (fast on CPU)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 1, 3, padding=1))
    return TorchDensityCounter(model, name="tiny", stride=2, provenance=Provenance("random-init"))


@pytest.fixture(scope="module")
def refs():
    ds = SyntheticCrowds("SYN-SPARSE")
    return ds.samples("train")[:4], ds.samples("val")[:2]


def opts(epochs: int, **kw) -> DensityTrainOptions:
    """scale 0.25: 80×60 images; crops of 32 px."""
    return DensityTrainOptions(**{"epochs": epochs, "scale": 0.25, "crop_size": 32, "density_scale": 100.0,
                                  "lr": 3e-3, **kw})


def weights(counter) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in counter.model.state_dict().values()]


def test_loss_decreases_and_lr_decays_per_epoch(refs):
    train, val = refs
    res = train_density_counter(tiny_counter(), train, val, opts(6))
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0]
    assert [h["epoch"] for h in res.history] == list(range(1, 7))
    assert res.history[0]["lr"] == pytest.approx(3e-3) and res.history[1]["lr"] == pytest.approx(3e-3 * 0.99)


def test_deterministic_same_seed_identical_weights(refs):
    train, val = refs
    a = train_density_counter(tiny_counter(), train, val, opts(2), seed=3)
    b = train_density_counter(tiny_counter(), train, val, opts(2), seed=3)
    c = train_density_counter(tiny_counter(), train, val, opts(2), seed=4)
    for x, y in zip(weights(a.counter), weights(b.counter)):
        np.testing.assert_array_equal(x, y)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert any(not np.array_equal(x, y) for x, y in zip(weights(a.counter), weights(c.counter)))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(refs, tmp_path):
    train, val = refs
    full = train_density_counter(tiny_counter(), train, val, opts(3), seed=1, checkpoint_dir=tmp_path / "a")

    def stop_after_first_epoch(step):
        if step == len(train):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_density_counter(tiny_counter(), train, val, opts(3), seed=1, checkpoint_dir=tmp_path / "b",
                              on_checkpoint=stop_after_first_epoch)
    assert (tmp_path / "b" / "density" / f"step-{len(train):08d}").is_dir()
    resumed = train_density_counter(tiny_counter(seed=99), train, val, opts(3), seed=1, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 3
    for x, y in zip(weights(full.counter), weights(resumed.counter)):
        np.testing.assert_array_equal(x, y)
    assert [h["val_mae"] for h in full.history] == [h["val_mae"] for h in resumed.history]
    # a finished training returns at once with the best state, training nothing
    seen = []
    again = train_density_counter(tiny_counter(seed=7), train, val, opts(3), seed=1, checkpoint_dir=tmp_path / "b",
                                  on_checkpoint=seen.append)
    assert seen == [] and again.best_epoch == full.best_epoch
    for x, y in zip(weights(full.counter), weights(again.counter)):
        np.testing.assert_array_equal(x, y)


def test_checkpoint_with_other_options_is_refused(refs, tmp_path):
    train, val = refs
    train_density_counter(tiny_counter(), train, val, opts(1), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="written with other training options"):
        train_density_counter(tiny_counter(), train, val, opts(2, lr=1e-4), checkpoint_dir=tmp_path)


def test_val_selection_keeps_best_epoch(refs):
    """The returned weights are those of the epoch with the lowest val MAE, and their val MAE is it."""
    train, val = refs
    res = train_density_counter(tiny_counter(), train, val, opts(5, lr=5e-2), seed=0)  # a jumpy val MAE
    maes = [h["val_mae"] for h in res.history]
    assert res.best_epoch == int(np.argmin(maes)) + 1
    assert res.best_val_mae == min(maes)
    errs = [abs(res.counter.predict(s.image).count - s.count) for s in (r.load() for r in val)]
    assert np.mean(errs) == pytest.approx(res.best_val_mae, rel=1e-5, abs=1e-4)


def test_extra_samples_mixed_in_each_epoch(refs):
    train, val = refs
    calls = []
    extra = SyntheticCrowds("SYN-DENSE").samples("train")[0].load()

    def draw(epoch, rng):
        calls.append(epoch)
        return [(extra.image, extra.points)] * 2

    res = train_density_counter(tiny_counter(), train, val, opts(2), extras=EpochExtras(2, draw))
    assert calls == [1, 2] and res.epochs_completed == 2
    base = train_density_counter(tiny_counter(), train, val, opts(2))
    assert any(not np.array_equal(x, y) for x, y in zip(weights(res.counter), weights(base.counter)))


def test_extra_samples_given_as_callables_are_read_one_batch_at_a_time(refs):
    """A drawn sample given as a callable is read when its batch is drawn, once per epoch (so an epoch of thousands
    of synthetic images is never held in memory at once), and trains exactly as the same samples given as pairs."""
    train, val = refs
    extra = [s.load() for s in SyntheticCrowds("SYN-DENSE").samples("train")[:4]]
    reads = []

    def read(epoch, k):
        reads.append((epoch, k))
        return extra[k].image, extra[k].points

    def lazy(epoch, rng):
        return [functools.partial(read, epoch, k) for k in range(len(extra))]

    def eager(epoch, rng):
        return [(e.image, e.points) for e in extra]

    o = opts(2, batch_size=2)
    a = train_density_counter(tiny_counter(), train, val, o, extras=EpochExtras(4, eager))
    b = train_density_counter(tiny_counter(), train, val, o, extras=EpochExtras(4, lazy))
    assert all(np.array_equal(x, y) for x, y in zip(weights(a.counter), weights(b.counter)))
    assert sorted(reads) == [(e, k) for e in (1, 2) for k in range(4)]

    reads.clear()
    task = DensityTask(tiny_counter(), [], [], o, seed=0, device="cpu", extras=EpochExtras(4, lazy), fingerprint={},
                       make_item=lambda image, points: density_item(image, points, o, 2))
    first = task.batch(0, np.random.default_rng(0))
    assert len(first) == 2 and len(reads) == 2  # the epoch's other two samples are not read yet
    task.batch(1, np.random.default_rng(0))
    assert sorted(reads) == [(1, k) for k in range(4)]


def test_bf16_precision_trains_on_cpu(refs):
    """The autocast path of --precision bf16 runs on CPU (the same code path as on a GPU)."""
    train, val = refs
    res = train_density_counter(tiny_counter(), train, val, opts(1), precision="bf16")
    assert np.isfinite(res.history[-1]["train_loss"])
    assert res.counter.precision == "bf16" and np.isfinite(res.counter.predict(val[0].load().image).count)


def test_scaled_counter_predicts_at_training_scale():
    image = np.zeros((120, 160, 3), np.uint8)
    seen = []

    class Inner:
        stride, name, provenance = 4, "inner", Provenance("x")

        def predict(self, img):
            seen.append(img.shape)
            return Prediction(count=50.0, density=np.full((img.shape[0] // 4, img.shape[1] // 4), 50.0 / (
                (img.shape[0] // 4) * (img.shape[1] // 4)), np.float32))

    c = ScaledCounter(Inner(), scale=0.5, density_scale=10.0)
    p = c.predict(image)
    assert seen == [(60, 80, 3)] and p.count == pytest.approx(5.0) and p.density.sum() == pytest.approx(5.0)
    assert p.points is not None and len(p.points) == len(p.scores)  # points from the integer inner stride
    assert (p.points[:, 0] < 160).all() and (p.points[:, 1] < 120).all()  # in original-image pixels
    odd = ScaledCounter(Inner()).predict(np.zeros((50, 70, 3), np.uint8))  # 70 / (70 // 4) is no integer
    assert odd.points is not None
    assert ScaledCounter(Inner(), max_side=80).input_factor(image) == pytest.approx(0.5)
    assert scale_factor(768, 1024, 1.0, 512) == 0.5 and scale_factor(240, 320, 1.0, 512) == 1.0


def test_resize_sample_keeps_points_in_place():
    img = np.zeros((100, 200, 3), np.uint8)
    img[50, 120] = 255
    pts = np.array([[120.5, 50.5], [0.0, 0.0]])
    small, sp = resize_sample(img, pts, 0.5)
    assert small.shape == (50, 100, 3) and len(sp) == 2
    np.testing.assert_allclose(sp, [[60.25, 25.25], [0, 0]])
    y, x = np.unravel_index(small[..., 0].argmax(), small.shape[:2])
    assert (x, y) == (60, 25)


def test_bad_options_one_line_errors(refs):
    train, val = refs
    with pytest.raises(ConfigError, match="no validation images"):
        train_density_counter(tiny_counter(), train, [], opts(1))
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        train_density_counter(tiny_counter(), train, val, opts(0))
    with pytest.raises(ConfigError, match="crop_size must be >= 1"):
        train_density_counter(tiny_counter(), train, val, opts(1, crop_size=0))
