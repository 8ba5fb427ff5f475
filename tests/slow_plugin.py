"""A test plugin module (loaded with ``--plugin slow_plugin``): a tiny density counter whose training steps take a
little time, so that a test can kill the process running a cell in the middle of its training. While the file named by
``$SLOW_PLUGIN_HOLD`` exists, training waits (a test cancels such a cell's Slurm job while it runs); with
``SLOW_PLUGIN_KILL=1`` the process SIGKILLs itself at the first training step, as the out-of-memory killer does."""
from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn

from harness import CounterSpec, MethodSpec, Provenance, TorchDensityCounter, hookimpl

#: seconds each training forward pass sleeps
STEP_SECONDS = 0.08


class Sleepy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 1, 3, padding=1))

    def forward(self, x):
        if self.training and os.environ.get("SLOW_PLUGIN_KILL") == "1":  # as the out-of-memory killer would
            os.kill(os.getpid(), signal.SIGKILL)
        if self.training:
            time.sleep(STEP_SECONDS)
            hold = os.environ.get("SLOW_PLUGIN_HOLD")
            while hold and os.path.exists(hold):
                time.sleep(0.2)
        return self.net(x)


def sleepy(device="cpu", seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sleepy()
    return TorchDensityCounter(model, name="sleepy-tiny", stride=2, provenance=Provenance("random-init"), device=device)


@hookimpl
def harness_register_counters(register):
    register(CounterSpec("sleepy-tiny", sleepy, tiny_options={"seed": 0}, build_args=("device", "seed")))


@hookimpl
def harness_register_methods(register):
    train = {"epochs": 8, "scale": 0.25, "crop_size": 32, "max_train_images": 6, "max_val_images": 2,
             "density_scale": 100.0, "lr": 3e-3}
    opts = {"counter": "sleepy-tiny", "train": train}
    register(MethodSpec("slow-tiny", "source-only", {"smoke": opts}))
