"""Training loop: loss decreases, deterministic weights, exact resume, val-MAE model selection, scaling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.data.synthetic import SyntheticCrowds
from harness.errors import ConfigError
from harness.models.base import TorchDensityCounter
from harness.specs import Provenance
from harness.training import ScaledCounter, resize_sample, scale_factor, train_density_counter


def tiny_counter(seed: int = 0) -> TorchDensityCounter:
    """A 2-conv density network with stride 2 (fast on CPU)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 1, 3, padding=1))
    return TorchDensityCounter(model, name="tiny", stride=2, provenance=Provenance("random-init"))


@pytest.fixture(scope="module")
def refs():
    ds = SyntheticCrowds("SYN-SPARSE")
    return ds.samples("train")[:4], ds.samples("val")[:2]


# scale 0.25: 80×60 images; crops of 32 px
OPTS = dict(scale=0.25, crop_size=32, density_scale=100.0, lr=3e-3)


def weights(counter) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in counter.model.state_dict().values()]


def test_loss_decreases(refs):
    train, val = refs
    res = train_density_counter(tiny_counter(), train, val, epochs=6, **OPTS)
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0]
    assert [h["epoch"] for h in res.history] == list(range(1, 7))
    assert res.history[1]["lr"] == pytest.approx(3e-3 * 0.99)  # StepLR γ = 0.99 per epoch


def test_deterministic_same_seed_identical_weights(refs):
    train, val = refs
    a = train_density_counter(tiny_counter(), train, val, epochs=2, seed=3, **OPTS)
    b = train_density_counter(tiny_counter(), train, val, epochs=2, seed=3, **OPTS)
    c = train_density_counter(tiny_counter(), train, val, epochs=2, seed=4, **OPTS)
    for x, y in zip(weights(a.counter), weights(b.counter)):
        np.testing.assert_array_equal(x, y)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert any(not np.array_equal(x, y) for x, y in zip(weights(a.counter), weights(c.counter)))


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(refs, tmp_path):
    train, val = refs
    full = train_density_counter(tiny_counter(), train, val, epochs=3, seed=1, checkpoint_dir=tmp_path / "a", **OPTS)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_density_counter(tiny_counter(), train, val, epochs=3, seed=1, checkpoint_dir=tmp_path / "b",
                              on_epoch_end=stop_after_first, **OPTS)
    assert (tmp_path / "b" / "last.pt").exists()
    seen = []
    resumed = train_density_counter(tiny_counter(seed=99), train, val, epochs=3, seed=1,
                                    checkpoint_dir=tmp_path / "b", on_epoch_end=seen.append, **OPTS)
    assert resumed.resumed_from_epoch == 1 and [r["epoch"] for r in seen] == [2, 3]
    assert resumed.epochs_completed == 3 and len(resumed.history) == 3
    for x, y in zip(weights(full.counter), weights(resumed.counter)):
        np.testing.assert_array_equal(x, y)
    assert [h["val_mae"] for h in full.history] == [h["val_mae"] for h in resumed.history]

    # a finished training returns at once with the best state, training nothing
    calls = []
    again = train_density_counter(tiny_counter(seed=7), train, val, epochs=3, seed=1, checkpoint_dir=tmp_path / "b",
                                  on_epoch_end=calls.append, **OPTS)
    assert calls == [] and again.best_epoch == full.best_epoch
    for x, y in zip(weights(full.counter), weights(again.counter)):
        np.testing.assert_array_equal(x, y)


def test_checkpoint_with_other_options_is_refused(refs, tmp_path):
    train, val = refs
    train_density_counter(tiny_counter(), train, val, epochs=1, checkpoint_dir=tmp_path, **OPTS)
    with pytest.raises(ConfigError, match=r"different training options \(lr\)"):
        train_density_counter(tiny_counter(), train, val, epochs=2, checkpoint_dir=tmp_path,
                              **{**OPTS, "lr": 1e-4})


def test_val_selection_keeps_best_epoch(refs):
    """The returned weights are those of the epoch with the lowest val MAE, and their val MAE is it."""
    train, val = refs
    # a large lr makes the val MAE jump around, so the best epoch is usually not the last one
    res = train_density_counter(tiny_counter(), train, val, epochs=5, seed=0, **{**OPTS, "lr": 5e-2})
    maes = [h["val_mae"] for h in res.history]
    assert res.best_epoch == int(np.argmin(maes)) + 1
    assert res.best_val_mae == min(maes)
    errs = []
    for r in val:
        s = r.load()
        errs.append(abs(res.counter.predict(s.image).count - s.count))
    assert np.mean(errs) == pytest.approx(res.best_val_mae, rel=1e-5, abs=1e-4)


def test_extra_samples_mixed_in_each_epoch(refs):
    train, val = refs
    calls = []
    extra = SyntheticCrowds("SYN-DENSE").samples("train")[0].load()

    def hook(epoch, rng):
        calls.append((epoch, int(rng.integers(1 << 30))))
        return [(extra.image, extra.points)] * epoch

    res = train_density_counter(tiny_counter(), train, val, epochs=2, extra_samples=hook, **OPTS)
    assert [c[0] for c in calls] == [1, 2]
    assert [h["n_train"] for h in res.history] == [len(train) + 1, len(train) + 2]


def test_scaled_counter_predicts_at_training_scale():
    image = np.zeros((120, 160, 3), np.uint8)
    seen = []

    class Inner:
        stride, name, provenance = 4, "inner", Provenance("x")

        def predict(self, img):
            from harness.specs import Prediction

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
    with pytest.raises(ConfigError, match="empty val_refs"):
        train_density_counter(tiny_counter(), train, [], epochs=1)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        train_density_counter(tiny_counter(), train, val, epochs=0)
    with pytest.raises(ConfigError, match="smaller than the counter's stride"):
        train_density_counter(tiny_counter(), train, val, epochs=1, crop_size=1)
