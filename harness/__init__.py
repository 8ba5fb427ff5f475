"""crowd-harness: a plugin-based benchmark harness for cross-dataset crowd counting."""
from __future__ import annotations

from .hookspecs import hookimpl
from .specs import (AnnotatorSpec, CellContext, Counter, CounterSpec, Dataset, DatasetSpec, GeneratorSpec,
                    MethodSpec, Prediction, Provenance, PseudoLabel, Sample, SampleRef, StrategySpec,
                    SyntheticImage, UnlabelledRef)

__version__ = "0.1.0"

__all__ = ["hookimpl", "AnnotatorSpec", "CellContext", "Counter", "CounterSpec", "Dataset", "DatasetSpec",
           "GeneratorSpec", "MethodSpec", "Prediction", "Provenance", "PseudoLabel", "Sample", "SampleRef",
           "StrategySpec", "SyntheticImage", "UnlabelledRef", "__version__"]
