"""The one evaluation path: per-image seeds (a stochastic counter's killed-and-resumed evaluation equals an
uninterrupted one), prediction validation at the boundary, count-only counters, and what is persisted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import PluginError, Prediction, Provenance, evaluate_counter, image_seed
from harness.data.synthetic import SyntheticCrowds
from harness.evaluation import read_partial


@pytest.fixture(scope="module")
def refs():
    return SyntheticCrowds("SYN-SPARSE").samples("test")[:6]


class SamplingCounter:
    """A stochastic counter (like a diffusion sampler): the count and the points depend on the generator."""

    name = "sampler"
    stochastic = True
    provenance = Provenance("random")

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = 0, stop_after

    def predict(self, image, generator=None):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt  # killed in the middle of the evaluation
        self.calls += 1
        noise = torch.rand(3, generator=generator).numpy()
        pts = noise[:2].reshape(1, 2) * np.array(image.shape[1::-1])
        return Prediction(count=float(image.mean() / 10 + noise[2]), points=pts, scores=np.ones(1))


def test_killed_and_resumed_stochastic_evaluation_equals_uninterrupted(refs, tmp_path):
    full = evaluate_counter(SamplingCounter(), refs, seed=7, partial_path=tmp_path / "a.jsonl")
    with pytest.raises(KeyboardInterrupt):
        evaluate_counter(SamplingCounter(stop_after=4), refs, seed=7, partial_path=tmp_path / "b.jsonl")
    assert len(read_partial(tmp_path / "b.jsonl")) == 4
    torch.manual_seed(12345)  # whatever the global RNG state is on resume
    resumed = evaluate_counter(SamplingCounter(), refs, seed=7, partial_path=tmp_path / "b.jsonl")
    assert resumed.resumed == 4
    assert [r["pred_count"] for r in resumed.records] == [r["pred_count"] for r in full.records]
    assert [r["pred_points"] for r in resumed.records] == [r["pred_points"] for r in full.records]
    assert resumed.metrics == full.metrics
    other = evaluate_counter(SamplingCounter(), refs, seed=8)
    assert [r["pred_count"] for r in other.records] != [r["pred_count"] for r in full.records]


def test_image_seed_depends_on_cell_seed_and_image():
    assert image_seed(0, "SHA/test/IMG_1") == image_seed(0, "SHA/test/IMG_1")
    assert len({image_seed(0, "SHA/test/IMG_1"), image_seed(1, "SHA/test/IMG_1"), image_seed(0, "SHA/test/IMG_2")}) == 3
    assert 0 <= image_seed(2**32 - 1, "x") < 2**63


class Broken:
    name = "broken"
    provenance = Provenance("x")

    def __init__(self, pred):
        self.pred = pred

    def predict(self, image):
        return self.pred


@pytest.mark.parametrize("pred, message", [
    (Prediction(count=float("nan")), "count is nan"),
    (Prediction(count=float("inf")), "count is inf"),
    (Prediction(count=1.0, density=np.ones(5, np.float32)), r"density has shape \(5,\), expected 2-D"),
    (Prediction(count=1.0, density=np.full((2, 2), np.nan, np.float32)), "density contains NaN"),
    (Prediction(count=1.0, points=np.ones((3, 3))), r"points have shape \(3, 3\)"),
    (Prediction(count=1.0, points=np.ones((3, 2)), scores=np.ones(2)), "2 scores for 3 points"),
    ("12", "predict returned str"),
])
def test_invalid_predictions_are_one_line_plugin_errors_naming_counter_and_image(refs, tmp_path, pred, message):
    partial = tmp_path / "p.jsonl"
    with pytest.raises(PluginError, match=message) as exc:
        evaluate_counter(Broken(pred), refs[:2], partial_path=partial)
    text = str(exc.value)
    assert "\n" not in text and "counter 'broken'" in text and f"image {refs[0].key}" in text
    assert read_partial(partial) == []  # nothing non-finite or malformed was persisted


def test_count_only_counter_gets_no_map(refs):
    class CountOnly:
        name, localises, provenance = "count-only", False, Provenance("x")

        def predict(self, image):  # a density is given, but the counter says it does not localise
            return Prediction(count=3.0, density=np.ones((4, 4), np.float32))

    res = evaluate_counter(CountOnly(), refs)
    assert res.metrics["map"] is None and res.metrics["ap@5"] is None and res.metrics["mae"] is not None
    assert all(r["pred_points"] is None for r in res.records)


class _Ref:
    def __init__(self, i, started, fail=False):
        self.i, self.started, self.fail = i, started, fail

    def load(self):
        import threading

        self.started[self.i].set()
        if self.fail:
            raise ValueError(f"sample {self.i} unreadable")
        return (self.i, threading.current_thread().name)


def test_samples_are_decoded_ahead_of_the_model_in_order_and_errors_arrive_with_their_sample():
    """For a model on a GPU, load_samples decodes the next sample in a thread while the consumer (the model) works on
    this one; the order is the refs' order and a failing load is raised when its sample is reached, not earlier."""
    import threading

    from harness.evaluation import load_ahead, load_samples

    assert load_ahead("cuda:1") == 1 and load_ahead(torch.device("cuda", 0)) == 1 and load_ahead("cpu") == 0
    started = [threading.Event() for _ in range(4)]
    refs = [_Ref(i, started) for i in range(3)] + [_Ref(3, started, fail=True)]
    got = []
    gen = load_samples(refs, ahead=1)
    for i in range(3):
        idx, thread = next(gen)
        got.append(idx)
        assert thread.startswith("harness-load")
        # while "the model" works on sample i, sample i + 1 is already being loaded (no deadlock)
        assert started[i + 1].wait(timeout=10), f"sample {i + 1} was not loaded ahead"
    with pytest.raises(ValueError, match="sample 3 unreadable"):
        next(gen)
    assert got == [0, 1, 2]
    # strictly in turn: nothing is loaded before it is asked for
    started = [threading.Event() for _ in range(2)]
    gen = load_samples([_Ref(0, started), _Ref(1, started)])  # the default (a CPU model)
    assert next(gen)[0] == 0 and not started[1].is_set()
    gen.close()
