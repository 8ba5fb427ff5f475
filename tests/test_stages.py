"""The dry run's meter (harness.stages): inert outside a dry run; inside one it stops loops, counts FLOPs of the
first unit, times the others without the counter, attributes nested stages to themselves and projects their full
counts; the core loops (training, evaluation, the synthetic pool) declare their stages."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness import LoopConfig, Objective, OptimConfig, train
from harness.stages import Meter, active_meter, metering, stage

LIN_FLOPS = 2 * 64 * 128 * 128  # one (64, 128) @ (128, 128) matrix product


@pytest.fixture()
def lin():
    torch.manual_seed(0)
    return nn.Linear(128, 128, bias=False), torch.randn(64, 128)


def test_outside_a_dry_run_stages_do_nothing(lin):
    net, x = lin
    assert active_meter() is None
    ran = 0
    with stage("train: x", units=5) as st:
        for _ in range(5):
            with st.unit():
                net(x)
                ran += 1
            assert not st.done
    assert ran == 5


def test_units_stop_flops_counted_once_and_nested_stages_attributed(lin):
    net, x = lin
    meter = Meter(max_units=2)
    outer_ran = inner_ran = 0
    with metering(meter, "m A→B"):
        assert active_meter() is meter
        with stage("outer", units=10, unit="image", params=123) as so:
            for _ in range(10):
                with so.unit():
                    net(x)
                    outer_ran += 1
                    with stage("inner", units=5, unit="step") as si:
                        for _ in range(5):
                            with si.unit():
                                net(net(x))
                                inner_ran += 1
                            if si.done:
                                break
                if so.done:
                    break
    assert active_meter() is None
    assert (outer_ran, inner_ran) == (2, 4)  # each entry of a stage runs max_units units
    outer, inner = meter.records[("m A→B", "outer")], meter.records[("m A→B", "inner")]
    assert outer.flops_per_unit == LIN_FLOPS  # its own work only: the nested stage's is excluded
    assert inner.flops_per_unit == 2 * LIN_FLOPS
    # operator calls likewise: one Linear is the same few ATen calls each time, the inner unit makes twice as many
    assert outer.ops_per_unit > 0 and inner.ops_per_unit == 2 * outer.ops_per_unit
    assert inner.parent == "outer" and outer.parent is None
    assert outer.params == 123 and outer.units_run == 2 and inner.entries == 2 and inner.units_run == 4
    assert meter.full_units(outer) == 10
    assert meter.full_units(inner) == 50  # 5 per entry × 1 entry per image × 10 images
    # the second units were timed without the FLOP counter
    assert not outer.timed_with_counter and not inner.timed_with_counter
    assert outer.seconds_per_unit > 0 and inner.seconds_per_unit > 0


def test_a_stage_that_ran_one_unit_says_it_was_timed_with_the_counter(lin):
    net, x = lin
    meter = Meter(max_units=1)
    with metering(meter, "s"):
        with stage("once", units=3) as st:
            with st.unit():
                net(x)
    rec = meter.records[("s", "once")]
    assert rec.timed_with_counter and rec.flops_per_unit == LIN_FLOPS and rec.units_declared == 3


def test_on_a_gpu_a_unit_is_timed_until_its_queued_kernels_finish(lin, monkeypatch):
    """CUDA runs kernels asynchronously: a unit's clock must stop after torch.cuda.synchronize(), or it times the
    launches. Here (no GPU) the CUDA calls are stand-ins: each unit queues 50 ms of "kernels" that only a
    synchronisation waits for; the unit's time must include them, and no queued work may leak into the next unit."""
    import time as _time

    net, x = lin
    queued = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: [_time.sleep(queued.pop()) for _ in list(queued)])
    for name in ("memory_allocated", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda *a: 0)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: None)
    meter = Meter(max_units=3, device="cuda")
    with metering(meter, "g"):
        queued.append(0.2)  # work queued before the stage: not the units'
        with stage("train: g", units=3) as st:
            while not st.done:
                with st.unit():
                    net(x)
                    queued.append(0.05)
    rec = meter.records[("g", "train: g")]
    assert rec.units_run == 3 and not rec.timed_with_counter
    assert 0.05 <= rec.seconds_per_unit < 0.15


def test_cached_work_borrows_the_figures_of_the_same_stage_in_another_cell(lin):
    net, x = lin
    meter = Meter(max_units=2)
    for scope, run in (("a", True), ("b", False)):
        with metering(meter, scope):
            with stage("generate: g", units=4, key={"g": 1}) as st:
                if run:
                    for _ in range(2):
                        with st.unit():
                            net(x)
    b = meter.records[("b", "generate: g")]
    assert b.units_run == 0 and b.reused_from == "a" and b.flops_per_unit == LIN_FLOPS
    assert b.ops_per_unit == meter.records[("a", "generate: g")].ops_per_unit > 0  # the operator calls too


class Task:
    def __init__(self):
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.evals = 0

    def modules(self):
        return {"net": self.net}

    def objectives(self):
        return [Objective("mse", self.net.parameters(), self.loss, OptimConfig(name="sgd", lr=0.1))]

    def batch(self, step, rng):
        return torch.from_numpy(rng.standard_normal((8, 4)).astype(np.float32))

    def loss(self, batch, step):
        return self.net(batch).pow(2).mean()

    @torch.no_grad()
    def evaluate(self):
        self.evals += 1
        return 1.0


def test_the_training_loop_declares_its_steps_and_selection(tmp_path):
    task = Task()
    meter = Meter(max_units=2)
    with metering(meter, "c"):
        res = train(task, LoopConfig(steps=1000, eval_every=100, checkpoint_every=10), checkpoint_dir=tmp_path,
                    name="toy")
    assert res.steps_done == 2 and task.evals == 1  # stopped; one evaluation pass measured
    steps, select = meter.records[("c", "train: toy")], meter.records[("c", "select: toy")]
    assert steps.units_declared == 1000 and steps.units_run == 2 and steps.params == 5
    assert steps.flops_per_unit > 0 and steps.unit == "optimiser step"
    assert select.units_declared == 10 and select.units_run == 1
    assert not list(tmp_path.iterdir())  # no checkpoint was written by the stopped loop


def test_evaluation_declares_every_test_image_and_stops():
    from harness import evaluate_counter
    from harness.types import Prediction

    class Ref:
        def __init__(self, i):
            self.id = self.key = f"img{i}"

        def load(self):
            from types import SimpleNamespace

            return SimpleNamespace(id=self.id, image=np.zeros((8, 8, 3), np.uint8), count=3.0, points=np.zeros((3, 2)),
                                   meta={})

    class Zero:
        name = "zero"
        localises = False

        def predict(self, image):
            return Prediction(count=0.0)

    meter = Meter(max_units=2)
    with metering(meter, "e"):
        res = evaluate_counter(Zero(), [Ref(i) for i in range(7)])
    rec = meter.records[("e", "evaluate: predict")]
    assert len(res.records) == 2 and rec.units_declared == 7 and meter.full_units(rec) == 7


def test_a_per_cell_budget_runs_no_unit_once_spent(lin):
    net, x = lin
    meter = Meter(max_units=2)
    ran = []
    with metering(meter, "p"):
        with stage("outer", units=4) as so:
            for _ in range(4):
                with so.unit():
                    n = 0
                    with stage("sampler", units=3, per_cell=True) as si:
                        for _ in range(3):
                            if si.done:
                                break
                            with si.unit():
                                net(x)
                                n += 1
                    ran.append(n)
                if so.done:
                    break
    assert ran == [2, 0]  # the second image's sampler found the cell's budget spent
    rec = meter.records[("p", "sampler")]
    assert rec.entries == 2 and meter.full_units(rec) == 12  # 3 per entry × 1 entry per image × 4 images


def test_a_stage_entered_under_another_parent_is_counted_apart(lin):
    """SYRAC's generator: 20 images for the noisy set at the top, then 4 per real image inside 'pairs' (30 images).
    One record for both once counted 20 + 4 images (and scaled the nested steps by that): each parent scales its own."""
    net, x = lin
    meter = Meter(max_units=1)

    def generate(n):
        with stage("generate", units=n, unit="image") as sg:
            for _ in range(n):
                with sg.unit():
                    with stage("step", units=50, unit="denoising step") as ss:
                        for _ in range(50):
                            with ss.unit():
                                net(x)
                            if ss.done:
                                break
                if sg.done:
                    break

    with metering(meter, "c"):
        generate(20)
        with stage("pairs", units=30, unit="real image") as sp:
            for _ in range(30):
                with sp.unit():
                    generate(4)
                if sp.done:
                    break
    recs = {name: r for (scope, name), r in meter.records.items()}
    assert meter.full_units(recs["generate"]) == 20 and meter.full_units(recs["step"]) == 20 * 50
    nested = recs["generate (in pairs)"]
    assert nested.parent == "pairs" and meter.full_units(nested) == 4 * 30
    assert meter.full_units(recs["step (in generate (in pairs))"]) == 50 * 4 * 30


def test_a_unit_projects_onto_a_gpu_at_the_larger_of_its_arithmetic_and_its_operator_calls(lin):
    """Small work is bounded by its operator calls (launch and dispatch), large work by arithmetic
    (harness.dryrun.project_seconds): a loop of many tiny element-wise ops counts every call."""
    from harness.dryrun import GPU_OP_SECONDS, project_seconds

    net, x = lin
    meter = Meter(max_units=1)
    with metering(meter, "s"):
        with stage("tiny", units=1) as st:
            with st.unit():
                y = net(x[:1, :])
                for _ in range(200):
                    y = y * 1.0001
    rec = meter.records[("s", "tiny")]
    assert rec.ops_per_unit >= 200 and rec.flops_per_unit == 2 * 128 * 128
    fast = 1e12
    assert project_seconds(rec.flops_per_unit, rec.ops_per_unit, fast) == rec.ops_per_unit * GPU_OP_SECONDS
    assert project_seconds(1e15, rec.ops_per_unit, fast) == 1e3  # arithmetic-bound
    assert project_seconds(None, 10, fast) is None and project_seconds(0.0, 10, fast) is None  # no GPU work


def test_a_counter_paused_for_a_nested_unit_goes_on_counting_its_own_work(lin):
    """Three levels: in the outer stage's counted unit, the nested stage's second unit (its FLOPs known) is timed with
    the outer counter paused, a third stage is first counted inside that paused unit, and the outer stage works on
    afterwards: each stage gets its own work only, FLOPs and operator calls alike; a counter's totals stay right once
    closed."""
    from harness.meter_count import UnitCounter

    net, x = lin
    meter = Meter(max_units=2)
    with metering(meter, "s"):
        with stage("outer", units=1) as so:
            with so.unit():
                net(x)
                with stage("middle", units=2) as sm:
                    for k in range(2):
                        with sm.unit():
                            net(x)
                            if k == 1:
                                with stage("inner", units=1) as si:
                                    with si.unit():
                                        net(net(net(x)))
                net(x)
                net(x)
    outer, middle, inner = (meter.records[("s", n)] for n in ("outer", "middle", "inner"))
    assert (outer.flops_per_unit, middle.flops_per_unit, inner.flops_per_unit) == (
        3 * LIN_FLOPS, LIN_FLOPS, 3 * LIN_FLOPS)
    one = middle.ops_per_unit
    assert outer.ops_per_unit == 3 * one and inner.ops_per_unit == 3 * one
    assert not middle.timed_with_counter and inner.parent == "middle"  # its second unit ran without a counter
    c = UnitCounter()
    for _ in range(2):
        with c:
            net(x)
    assert c.totals() == (2 * LIN_FLOPS, 2 * one)
