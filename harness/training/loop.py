"""The one training loop of the harness: resumable, deterministic, on Hugging Face ``accelerate``
(docs/design.md §6).

A method supplies a :class:`TrainTask` — its modules, one or more :class:`Objective` s (a loss and the
parameters it optimises; a GAN has two) and a deterministic ``batch(step, rng)`` — and :func:`train` owns
everything else:

- **device placement and precision** through :class:`accelerate.Accelerator` (``precision``: ``fp32``,
  ``bf16``, ``fp16``; fp16 on CUDA uses accelerate's gradient scaler; autocast on CPU too, so the logic is
  exercised without a GPU);
- **optimisers and schedulers** from :class:`OptimConfig` (:mod:`harness.training.optim`: Adam, AdamW, SGD;
  constant, step, cosine, linear warm-up), per-objective parameter groups, gradient clipping;
- **EMA** of the modules the task names (``torch.optim.swa_utils.AveragedModel`` with
  ``get_ema_multi_avg_fn``: the exponential moving average diffusers' ``EMAModel`` keeps, in torch itself);
- **evaluation every N steps** with **model selection** on a declared split (``task.evaluate() -> float``,
  lower is better, e.g. the source val MAE): the best weights are kept and returned;
- **one seeding scheme**: step ``k`` draws from ``numpy.random.default_rng([seed, 0, k])`` and seeds torch's
  global RNG from ``[seed, 1, k]``, so a resumed run draws exactly what an uninterrupted one draws;
- **one checkpoint schema**: ``<checkpoint_dir>/step-<k>/`` written by ``accelerator.save_state`` into a
  temporary folder and renamed into place (atomic), with ``loop.json`` holding the step, the history, the best
  metric and a fingerprint of the task's and the loop's options. Resuming under other options is refused in
  one line; the two newest checkpoints are kept, and one that fails to load is moved aside
  (``step-<k>.corrupt``) and the previous one used.

Why accelerate: it is what diffusers' own training scripts use, it owns device placement, autocast and the
fp16 gradient scaler for single- and multi-GPU runs, and its ``save_state``/``load_state`` capture model,
optimiser, scheduler and registered objects in one call.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from ..errors import ConfigError
from ..stages import count_params, stage
from ..tracking import log_training
from .checkpoints import LoopState, fingerprint, load_latest, save
from .optim import OPTIMIZERS, SCHEDULERS, OptimConfig, make_optimizer, make_scheduler  # noqa: F401  (re-exported)
from .precision import PRECISIONS, autocast, autocast_dtype, make_accelerator  # noqa: F401  (re-exported)

_log = logging.getLogger("harness.training")


@dataclass
class LoopConfig:
    """What the loop does besides the objectives.

    Attributes:
        steps: optimiser steps in total (>= 0; 0 returns the modules as they are).
        eval_every: evaluate (and select) every this many steps and at the end (None: at the end only, when the
            task has ``evaluate``).
        checkpoint_every: write a checkpoint every this many steps and at the end (None: no checkpoints).
        precision: ``fp32`` | ``bf16`` | ``fp16`` (autocast dtype; the parameters stay fp32).
        ema_decay: EMA decay of the modules named by ``task.ema`` (None: no EMA).
        keep_checkpoints: checkpoints kept (the newest; >= 1).
        log_every: a log line every this many steps.
        select: ``best`` (hand back the weights of the best evaluation) or ``last`` (the last step's weights, as a
            protocol that reports the final epoch does; evaluations are still run and logged).
    """

    steps: int
    eval_every: int | None = None
    checkpoint_every: int | None = 100
    precision: str = "fp32"
    ema_decay: float | None = None
    keep_checkpoints: int = 2
    log_every: int = 50
    select: str = "best"

    def validate(self) -> list[str]:
        problems = []
        if not isinstance(self.steps, int) or self.steps < 0:
            problems.append(f"steps must be an integer >= 0, got {self.steps!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("eval_every", "checkpoint_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                problems.append(f"{name} must be a positive integer or null, got {v!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            problems.append(f"ema_decay must lie in (0, 1), got {self.ema_decay!r}")
        if self.keep_checkpoints < 1:
            problems.append("keep_checkpoints must be >= 1")
        if self.select not in ("best", "last"):
            problems.append(f"select must be 'best' or 'last', got {self.select!r}")
        return problems


@dataclass
class Objective:
    """One loss and the parameters it trains.

    Attributes:
        name: e.g. ``"density"``, ``"generator"``, ``"discriminator"``.
        params: parameters, or torch parameter groups (``[{"params": [...], "lr": ...}, ...]``).
        loss: ``loss(batch, step) -> Tensor`` (scalar) or ``(Tensor, {"name": float, ...})`` (logged parts).
        optim: its :class:`OptimConfig`.
    """

    name: str
    params: Iterable[Any]
    loss: Callable[[Any, int], Any]
    optim: OptimConfig = field(default_factory=OptimConfig)


class TrainTask(Protocol):
    """What a method gives :func:`train`.

    Required: ``modules() -> dict[str, nn.Module]`` (all are checkpointed and moved to the device);
    ``objectives() -> list[Objective]`` (stepped in order every step); ``batch(step, rng) -> Any`` (a pure
    function of the step and the step's seeded ``numpy.random.Generator``).
    Optional: ``evaluate() -> float`` (lower is better; the selection metric), ``ema: Sequence[str]``
    (module names to average), ``train_mode()`` (put modules in train mode; default: ``.train()`` on all),
    ``fingerprint() -> dict`` (the task's options, part of the resume guard), ``cost_key() -> dict`` (what fixes
    the work of one step — network configuration, batch shape — so that a dry run measures it once and other cells
    with the same key borrow the figures: :func:`harness.stages.stage`).
    """

    def modules(self) -> dict: ...

    def objectives(self) -> list[Objective]: ...

    def batch(self, step: int, rng: np.random.Generator) -> Any: ...


@dataclass
class LoopResult:
    """What :func:`train` returns: the modules hold the selected (best) weights, EMA included.

    Attributes:
        steps_done: steps trained in total (over all resumed calls).
        resumed_from: the step this call started at (0: fresh).
        best_step / best_metric: the selected evaluation (None / inf when the task does not evaluate: the
            last weights are kept).
        history: one record per log period ``{"step", "<objective>": mean loss, ..., "lr": ...}`` and per
            evaluation ``{"step", "eval": metric}``.
        seconds: wall time of this call.
    """

    steps_done: int
    resumed_from: int
    best_step: int | None
    best_metric: float
    history: list[dict]
    seconds: float


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The seeded generator of step ``step`` (stream 0: the task's batch; 1: torch's global RNG)."""
    return np.random.default_rng([int(seed) % 2**32, int(stream), int(step)])


def derive_seed(seed: int, *salts: int) -> int:
    """A seed in ``[0, 2**32)`` derived from ``seed`` and ``salts`` (independent streams for several trainings of
    one cell, e.g. RDBT's R, D and Φ)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, *map(int, salts)]).generate_state(1)[0])


def _torch_seed(seed: int, step: int) -> int:
    return int(step_rng(seed, step, 1).integers(2**63 - 1))


# ----------------------------------------------------------------------------------------- the loop


def train(task: Any, cfg: LoopConfig, *, seed: int = 0, device: str = "cpu", checkpoint_dir: str | Path | None = None,
          log: logging.Logger | None = None, name: str = "train",
          on_checkpoint: Callable[[int], None] | None = None) -> LoopResult:
    """Train ``task`` for ``cfg.steps`` optimiser steps (see the module notes); resumable from ``checkpoint_dir``.

    Args:
        task: a :class:`TrainTask`.
        cfg: the :class:`LoopConfig`.
        seed: seed of every random draw (the step's generator and torch's global RNG are derived from it).
        device: ``cpu`` or ``cuda[:n]``.
        checkpoint_dir: folder of this training's checkpoints (None: none are written or read).
        log: logger for progress lines.
        name: label in log lines.
        on_checkpoint: called with the step after each checkpoint is written (an exception stops training;
            the run resumes from that checkpoint).

    Returns:
        :class:`LoopResult`; the task's modules hold the selected weights (best evaluation, else the last; EMA
        weights where EMA is on) and are in eval mode.

    Raises:
        ConfigError: invalid :class:`LoopConfig` / :class:`OptimConfig`, or a checkpoint of other options.
    """
    with _deterministic_algorithms(device):
        return _train(task, cfg, seed=seed, device=device, checkpoint_dir=checkpoint_dir, log=log, name=name,
                      on_checkpoint=on_checkpoint)


@contextlib.contextmanager
def _deterministic_algorithms(device: str):
    """Deterministic algorithms (warn-only) on CPU for the span of a training; the previous flags restored after."""
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    wanted = (True, True) if str(device) == "cpu" else saved
    if wanted != saved:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if wanted != saved:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])


def _train(task: Any, cfg: LoopConfig, *, seed: int, device: str, checkpoint_dir: str | Path | None,
           log: logging.Logger | None, name: str, on_checkpoint: Callable[[int], None] | None) -> LoopResult:
    import torch

    log = log or _log
    problems = cfg.validate() + [p for o in task.objectives() for p in o.optim.validate()]
    if problems:
        raise ConfigError(f"{name}: " + "; ".join(problems))
    t0 = time.perf_counter()
    accelerator = make_accelerator(device, cfg.precision)
    modules = task.modules()
    names = list(modules)
    prepared = accelerator.prepare(*[modules[n] for n in names]) if names else ()
    prepared = prepared if isinstance(prepared, (tuple, list)) else (prepared,)
    objectives = task.objectives()
    optimizers = [make_optimizer(o.params, o.optim) for o in objectives]
    schedulers = [make_scheduler(opt, o.optim, cfg.steps) for opt, o in zip(optimizers, objectives)]
    optimizers = [accelerator.prepare_optimizer(o) for o in optimizers]
    schedulers = [accelerator.prepare_scheduler(s) for s in schedulers]
    ema = {}
    if cfg.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        for n in getattr(task, "ema", ()):
            ema[n] = AveragedModel(modules[n], multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
            accelerator.register_for_checkpointing(ema[n])
    state = LoopState()
    accelerator.register_for_checkpointing(state)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fp = fingerprint(task, cfg, seed)
    if folder is not None:
        loaded = load_latest(accelerator, folder, fp, log)
        if loaded is not None:
            log.info("%s: resuming at step %d/%d from %s", name, state.step, cfg.steps, loaded)
    start = state.step
    evaluate = getattr(task, "evaluate", None)

    def module_state() -> dict:
        return {n: {k: v.detach().to("cpu").clone() for k, v in _eval_module(n).state_dict().items()} for n in names}

    def _eval_module(n: str):
        return ema[n].module if n in ema else modules[n]

    def run_eval(step: int) -> None:
        for m in modules.values():
            m.eval()
        swapped = _swap_in_ema(modules, ema)
        try:
            with torch.no_grad(), autocast(device, cfg.precision):
                metric = float(evaluate())
        finally:
            _swap_back(modules, swapped)
        state.history.append({"step": step, "eval": metric})
        log_training(name, {"step": step, "eval": metric})
        if metric < state.best_metric:
            state.best_metric, state.best_step = metric, step
            if cfg.select == "best":
                state.best_state = module_state()
        log.info("%s: step %d eval %.4g (best %.4g @ %s)", name, step, metric, state.best_metric, state.best_step)

    with contextlib.ExitStack() as stack:  # the dry run's stages (harness.stages; inert in a real run)
        cost = task.cost_key() if hasattr(task, "cost_key") else None
        key = None if cost is None else {"task": type(task).__name__, "precision": cfg.precision, **cost}
        steps_stage = stack.enter_context(stage(f"train: {name}", units=cfg.steps - start, unit="optimiser step",
                                                params=count_params(*modules.values()), key=key))
        select = stack.enter_context(stage(f"select: {name}", units=_evaluations(cfg), unit="evaluation pass",
                                           key=key)) if evaluate is not None else None
        sums: dict[str, list[float]] = {}
        for step in range(start, cfg.steps):
            if steps_stage.done:  # only in a dry run: one evaluation pass is measured when none came yet
                if select is not None and not select.run and not select.done:
                    with select.unit():
                        run_eval(state.step)
                break
            with steps_stage.unit():
                lr_used = _step(task, modules, list(zip(objectives, optimizers, schedulers)), accelerator, step, seed,
                                device, cfg.precision, sums)
                for n, avg in ema.items():
                    avg.update_parameters(modules[n])
            state.step = step + 1
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                rec = {"step": state.step, **{k: float(np.mean(v)) for k, v in sums.items()}, "lr": lr_used}
                state.history.append(rec)
                log_training(name, rec)
                log.info("%s: step %d/%d %s (%.1fs)", name, state.step, cfg.steps,
                         " ".join(f"{k} {v:.5g}" for k, v in rec.items() if k not in ("step",) and v is not None),
                         time.perf_counter() - t0)
                sums = {}
            if evaluate is not None and (state.step == cfg.steps
                                         or (cfg.eval_every and state.step % cfg.eval_every == 0)):
                with select.unit():
                    run_eval(state.step)
            if folder is not None and cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0
                                                                or state.step == cfg.steps):
                save(accelerator, folder, state, fp, cfg.keep_checkpoints)
                if on_checkpoint is not None:
                    on_checkpoint(state.step)
    if evaluate is not None and state.best_state is None and cfg.steps == 0:
        run_eval(0)
    _hand_back(accelerator, names, prepared, ema, state)
    return LoopResult(steps_done=state.step, resumed_from=start, best_step=state.best_step,
                      best_metric=state.best_metric, history=list(state.history), seconds=time.perf_counter() - t0)


def _evaluations(cfg: LoopConfig) -> int:
    """Evaluation passes of a full training (every ``eval_every`` steps and at the end)."""
    if not cfg.eval_every:
        return 1
    return cfg.steps // cfg.eval_every + (1 if cfg.steps % cfg.eval_every else 0)


def _step(task: Any, modules: dict, stepped: list, accelerator: Any, step: int, seed: int, device: str,
          precision: str, sums: dict) -> float | None:
    """One optimiser step of every objective in order (``stepped``: ``(objective, optimiser, scheduler)``): the
    step's seeds, train mode, the task's batch, backward with autocast, clipping, stepping; the losses are appended to
    ``sums``. Returns the first optimiser's learning rate before the step."""
    import torch

    rng = step_rng(seed, step)
    torch.manual_seed(_torch_seed(seed, step))
    if hasattr(task, "train_mode"):
        task.train_mode()
    else:
        for m in modules.values():
            m.train()
    batch = task.batch(step, rng)
    lr_used = float(stepped[0][1].param_groups[0]["lr"]) if stepped else None
    for obj, opt, sch in stepped:
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = obj.loss(batch, step)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        accelerator.backward(loss)
        if obj.optim.grad_clip is not None:
            accelerator.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], obj.optim.grad_clip)
        opt.step()
        sch.step()
        sums.setdefault(obj.name, []).append(float(loss.detach()))
        for k, v in parts.items():
            sums.setdefault(f"{obj.name}/{k}", []).append(float(v))
    return lr_used


def _hand_back(accelerator: Any, names: list, prepared: tuple, ema: dict, state: LoopState) -> None:
    """Load the selected weights into the task's modules (the best evaluation; else the last, EMA where on)."""
    for i, n in enumerate(names):
        target = accelerator.unwrap_model(prepared[i], keep_fp32_wrapper=False)
        if state.best_state is not None:
            target.load_state_dict(state.best_state[n])
        elif n in ema:
            target.load_state_dict(ema[n].module.state_dict())
        target.eval()
    accelerator.free_memory()


def _swap_in_ema(modules: dict, ema: dict) -> dict:
    saved = {}
    for n, avg in ema.items():
        saved[n] = {k: v.detach().clone() for k, v in modules[n].state_dict().items()}
        modules[n].load_state_dict(avg.module.state_dict())
    return saved


def _swap_back(modules: dict, saved: dict) -> None:
    for n, st in saved.items():
        modules[n].load_state_dict(st)


__all__ = ["OptimConfig", "LoopConfig", "Objective", "TrainTask", "LoopResult", "train", "step_rng", "derive_seed",
           "make_accelerator", "autocast", "autocast_dtype", "PRECISIONS"]
