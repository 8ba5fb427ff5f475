"""The core training loop (harness.training.loop): objectives, schedules, clipping, EMA, selection, precision,
checkpoints (resume, corrupt fallback, options guard)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness import ConfigError, LoopConfig, Objective, OptimConfig, train
from harness.training.loop import make_accelerator
from harness.training.optim import make_scheduler


class Regression:
    """y = 3 x + 1 from noisy samples drawn from the step's generator; selection on a fixed val set."""

    def __init__(self, optim=None, ema=False):
        torch.manual_seed(0)
        self.net = nn.Linear(1, 1)
        self.optim = optim or OptimConfig(name="sgd", lr=0.1)
        if ema:
            self.ema = ("net",)
        self.evals = []

    def modules(self):
        return {"net": self.net}

    def objectives(self):
        return [Objective("mse", self.net.parameters(), self.loss, self.optim)]

    def batch(self, step, rng):
        x = rng.uniform(-1, 1, (16, 1)).astype(np.float32)
        return torch.from_numpy(x), torch.from_numpy(3 * x + 1 + 0.01 * rng.standard_normal((16, 1)).astype(np.float32))

    def loss(self, batch, step):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    @torch.no_grad()
    def evaluate(self):
        x = torch.linspace(-1, 1, 9)[:, None]
        m = float(nn.functional.l1_loss(self.net(x), 3 * x + 1))
        self.evals.append(m)
        return m


def params(task):
    return [p.detach().clone() for p in task.net.parameters()]


def test_loop_learns_selects_best_and_logs():
    task = Regression()
    res = train(task, LoopConfig(steps=60, eval_every=10, checkpoint_every=None, log_every=20))
    assert res.steps_done == 60 and res.resumed_from == 0
    assert [h["step"] for h in res.history if "mse" in h] == [20, 40, 60]
    evals = [h["eval"] for h in res.history if "eval" in h]
    assert len(evals) == 6 and res.best_metric == min(evals) and evals[-1] < evals[0] / 5
    w, b = (float(p.detach()) for p in task.net.parameters())
    assert abs(w - 3) < 0.3 and abs(b - 1) < 0.2
    assert task.evaluate() == pytest.approx(res.best_metric)  # the modules hold the selected weights


def test_two_objectives_step_in_order_each_on_its_own_parameters():
    """A GAN-like task: each objective's optimiser moves only its parameters."""
    torch.manual_seed(0)
    g, d = nn.Linear(2, 2), nn.Linear(2, 1)
    order = []

    class Adversarial:
        def modules(self):
            return {"g": g, "d": d}

        def objectives(self):
            return [Objective("d", d.parameters(), self.d_loss, OptimConfig(name="adam", lr=4e-4, betas=(0.0, 0.9))),
                    Objective("g", g.parameters(), self.g_loss, OptimConfig(name="adam", lr=1e-4, betas=(0.0, 0.9)))]

        def batch(self, step, rng):
            return torch.from_numpy(rng.standard_normal((4, 2)).astype(np.float32))

        def d_loss(self, z, step):
            order.append("d")
            return torch.relu(1 - d(z)).mean() + torch.relu(1 + d(g(z).detach())).mean()

        def g_loss(self, z, step):
            order.append("g")
            return -d(g(z)).mean()

    g0, d0 = [p.detach().clone() for p in g.parameters()], [p.detach().clone() for p in d.parameters()]
    train(Adversarial(), LoopConfig(steps=3, checkpoint_every=None))
    assert order == ["d", "g"] * 3
    assert all(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert not torch.equal(d0[0], d.weight)  # (the hinge terms' bias gradients cancel while both are active)


def test_schedulers_and_warmup():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)

    def lrs(cfg, n=6, total=6):
        o = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        s = make_scheduler(o, cfg, total)
        out = []
        for _ in range(n):
            out.append(o.param_groups[0]["lr"])
            o.step()
            s.step()
        return out

    assert lrs(OptimConfig(scheduler="step", step_size=2, gamma=0.5)) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert lrs(OptimConfig(scheduler="linear"), total=4, n=4) == [1, 0.75, 0.5, 0.25]
    cos = lrs(OptimConfig(scheduler="cosine"), total=4, n=4)
    assert cos[0] == 1 and cos[2] == pytest.approx(0.5) and cos[3] < 0.2
    assert lrs(OptimConfig(warmup_steps=2), n=4) == [0.5, 1, 1, 1]
    # constant, then linear decay (GauGAN's niter + niter_decay)
    assert lrs(OptimConfig(scheduler="linear", decay_start=2), total=6, n=6) == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25])
    del opt


def test_gradient_clipping_bounds_the_step():
    task = Regression(optim=OptimConfig(name="sgd", lr=1.0, momentum=0.0, grad_clip=0.01))
    before = torch.cat([p.flatten() for p in params(task)])
    train(task, LoopConfig(steps=1, checkpoint_every=None))
    after = torch.cat([p.detach().flatten() for p in task.net.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.01, rel=1e-3)


def test_ema_weights_are_returned_and_evaluated():
    raw = Regression(optim=OptimConfig(name="sgd", lr=0.5))
    train(raw, LoopConfig(steps=30, checkpoint_every=None))
    ema = Regression(optim=OptimConfig(name="sgd", lr=0.5), ema=True)
    res = train(ema, LoopConfig(steps=30, eval_every=30, checkpoint_every=None, ema_decay=0.9))
    # same raw trajectory, but the EMA lags behind it: the returned weights differ from the raw ones
    assert any(not torch.allclose(a, b) for a, b in zip(raw.net.parameters(), ema.net.parameters()))
    assert ema.evaluate() == pytest.approx(res.best_metric)


def test_resume_equals_uninterrupted_and_corrupt_checkpoint_falls_back(tmp_path):
    full = Regression()
    train(full, LoopConfig(steps=30, checkpoint_every=10), seed=5, checkpoint_dir=tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_at(step):
        if step == 20:
            raise Stop

    part = Regression()
    with pytest.raises(Stop):
        train(part, LoopConfig(steps=30, checkpoint_every=10), seed=5, checkpoint_dir=tmp_path / "b",
              on_checkpoint=stop_at)
    ckpts = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert ckpts == ["step-00000010", "step-00000020"]  # two kept
    # the newest checkpoint is torn: it is moved aside and training resumes from step 10
    (tmp_path / "b" / "step-00000020" / "model.safetensors").write_bytes(b"garbage")
    resumed = Regression()
    res = train(resumed, LoopConfig(steps=30, checkpoint_every=10), seed=5, checkpoint_dir=tmp_path / "b")
    assert res.resumed_from == 10
    assert any(p.name.startswith("step-00000020.corrupt") for p in (tmp_path / "b").iterdir())
    for a, b in zip(full.net.parameters(), resumed.net.parameters()):
        assert torch.equal(a, b)


def test_other_options_are_refused_on_resume(tmp_path):
    train(Regression(), LoopConfig(steps=10, checkpoint_every=5), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="other training options"):
        train(Regression(optim=OptimConfig(name="sgd", lr=0.2)), LoopConfig(steps=20, checkpoint_every=5),
              checkpoint_dir=tmp_path)


def test_invalid_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="precision 'fp8'.*optimizer 'lion'"):
        train(Regression(optim=OptimConfig(name="lion")), LoopConfig(steps=1, precision="fp8"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_paths_run_on_cpu(precision):
    """The autocast dtype reaches the loss on CPU (the logic of the GPU path), and the parameters stay fp32."""
    seen = []
    task = Regression()
    loss = task.loss

    def spy(batch, step):
        x, _ = batch
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return loss(batch, step)

    task.loss = spy
    train(task, LoopConfig(steps=2, checkpoint_every=None, precision=precision))
    assert seen == [getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[precision])] * 2
    assert all(p.dtype == torch.float32 for p in task.net.parameters())
    # the process-wide accelerate state follows the last cell's precision
    assert make_accelerator("cpu", "fp32").mixed_precision == "no"


class Scripted(Regression):
    """The regression whose evaluations are scripted (a val metric that is best early, as an overfitting model's)."""

    def __init__(self, metrics):
        super().__init__()
        self.metrics = list(metrics)

    def evaluate(self):
        return self.metrics.pop(0)


def test_select_last_hands_back_the_last_weights_and_still_evaluates():
    best_early = [1.0, 0.5, 2.0, 3.0, 4.0, 5.0]  # evaluations at steps 10, 20, ..., 60
    last = Scripted(best_early)
    res = train(last, LoopConfig(steps=60, eval_every=10, checkpoint_every=None, select="last"))
    final = Scripted([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])  # the same training, best == last
    train(final, LoopConfig(steps=60, eval_every=10, checkpoint_every=None))
    best = Scripted(best_early)
    train(best, LoopConfig(steps=60, eval_every=10, checkpoint_every=None))
    assert all(torch.equal(a, b) for a, b in zip(params(last), params(final)))  # the last step's weights
    assert not all(torch.equal(a, b) for a, b in zip(params(best), params(final)))  # "best" went back to step 20
    assert [h["eval"] for h in res.history if "eval" in h] == best_early and res.best_metric == 0.5
    assert "select must be 'best' or 'last'" in "; ".join(LoopConfig(steps=1, select="first").validate())
