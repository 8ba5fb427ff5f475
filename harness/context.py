"""What a strategy sees of one cell, and the one way it builds components (docs/design.md §5)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import PluginError
from .types import Dataset, Provenance, UnlabelledRef

if TYPE_CHECKING:
    import logging

    from .io import ArtifactCache
    from .plugins import Registries


@dataclass
class CellContext:
    """Everything a strategy may see for one cell (source -> target, one seed).

    The source dataset's ``train`` and ``val`` splits are labelled; the target is visible only through
    ``target_images`` (its train split, labels hidden). The target's test split is never passed in.

    Attributes:
        source: the source :class:`~harness.types.Dataset`.
        source_name / target_name: canonical dataset names.
        target_images: target train images, unlabelled.
        profile: ``"smoke"`` or ``"paper"``.
        seed: the cell seed (``0 <= seed < 2**32``; the runner seeds every RNG with it before ``fit``).
        device: ``"cpu"`` or ``"cuda[:n]"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (training and inference autocast).
        workers: image-decoding worker processes for data loading (``--workers``; 0: in this process).
        workdir: this cell's directory (checkpoints go in ``workdir / "checkpoints"``).
        cache: content-addressed artefact cache (:class:`harness.io.ArtifactCache`) shared across cells and runs.
        registries: the loaded component registries.
        options: the strategy's parsed options (its options dataclass).
        log: a ``logging.Logger`` writing to the cell's log file.
        provenance_notes: facts for the results (e.g. ``{"selection_split": "source val"}``).
        components: what :meth:`build` built: ``{"kind", "name", "provenance", "labels_reach_counter"}`` each.
    """

    source: Dataset
    source_name: str
    target_name: str
    target_images: Sequence[UnlabelledRef]
    profile: str
    seed: int
    device: str
    workdir: Path
    cache: "ArtifactCache"
    registries: "Registries"
    options: Any  # the strategy's own options dataclass (StrategySpec.options)
    log: "logging.Logger"
    precision: str = "fp32"
    workers: int = 0
    provenance_notes: dict = field(default_factory=dict)
    components: list = field(default_factory=list)

    def fit_conditions(self) -> dict:
        """The conditions every model trained in this cell depends on besides the method's options
        (:func:`harness.conditions.fit_conditions`: seed, source, precision, device kind, CPU threads now in force,
        harness version)."""
        import torch

        from .conditions import fit_conditions

        return fit_conditions(seed=self.seed, source=self.source_name, precision=self.precision, device=self.device,
                              threads=torch.get_num_threads())

    def cached_fit(self, kind: str, key: Any, create: Callable[[Path], None], suffix: str = ".pt") -> tuple[Path, bool]:
        """Train-or-load through the artefact cache: the one way a strategy caches a trained model.

        Args:
            kind: artefact folder (e.g. ``"rdbt-source"``, ``"ldm-model"``).
            key: JSON-ready dict of everything of the *method* that determines the model (options, image ids, its
                own format version). The cell's conditions (:meth:`fit_conditions`) are added here, so no caller
                can forget precision, device kind, thread count or harness version.
            create: ``create(tmp_path)`` trains and writes the model to ``tmp_path`` (renamed atomically).
            suffix: file suffix.

        Returns:
            ``(path, hit)``: the artefact and whether it was already cached (also recorded in
            ``provenance_notes["cached_fits"][kind]``, hence in the cell's ``metrics.json``).
        """
        from .stages import active_meter

        full = {"fit": key, "conditions": self.fit_conditions()}
        path = self.cache.path(kind, full, suffix)
        hit = path.exists()
        meter = active_meter()
        before = meter.names() if meter is not None else set()
        path = self.cache.get_or_create(kind, full, suffix, create)
        if meter is not None:  # a dry run: a fit another cell made lends this cell the stages it ran
            meter.artefact(str(path), before, hit)
        self.provenance_notes.setdefault("cached_fits", {})[kind] = {"hit": hit, "key": path.stem[:16]}
        return path, hit

    def build(self, kind: str, name: str, *, labels_reach_counter: bool = True, **options) -> Any:
        """Build the registered component ``name`` of ``kind`` (counter, generator, annotator, segmenter) for
        this cell: its factory gets the cell arguments its spec declares in ``build_args`` (``device``,
        ``cache_root``, ``registries``, ``seed``: :data:`harness.specs.BUILD_ARGS`) plus ``options``, which win; the object is checked against the kind's protocol and its provenance recorded in
        :attr:`components`.

        ``labels_reach_counter``: the component's outputs train the cell's counter (an annotator whose
        pseudo-labels are kept, a pretrained initialisation), so the datasets whose labels trained it count as
        labels the cell's counter saw (the leakage flags use it).

        Raises:
            UnknownNameError: no such component (with "did you mean").
            PluginError: the built object lacks what the kind's protocol requires (names the plugin).
        """
        from .components import kind as kind_of
        from .components import missing_members

        k = kind_of(kind)
        entry = self.registries.by_kind(k.name).entry(name)
        factory = entry.spec.factory
        cell_args = {"device": self.device, "cache_root": None if self.cache is None else self.cache.root,
                     "registries": self.registries, "seed": self.seed}
        kwargs = {a: cell_args[a] for a in entry.spec.build_args if cell_args[a] is not None}
        kwargs.update(options)
        obj = factory(**kwargs)
        if k.protocol is not None:
            missing = missing_members(obj, k.protocol)
            if missing:
                raise PluginError(f"{k.name} {entry.spec.name!r} of plugin {entry.plugin!r} lacks "
                                  f"{', '.join(missing)} required by harness.types.{k.protocol.__name__}")
        prov = getattr(obj, "provenance", None)
        if not isinstance(prov, Provenance):
            prov = Provenance(entry.spec.name, trained_on=frozenset(getattr(entry.spec, "trained_on", ())))
        self.components.append({"kind": k.name, "name": entry.spec.name, "plugin": entry.plugin,
                                "provenance": prov.to_dict(), "labels_reach_counter": bool(labels_reach_counter)})
        return obj

    def labels_seen(self) -> frozenset[str]:
        """Datasets whose labels reached the counter through built components (``labels_reach_counter``)."""
        return frozenset(d for c in self.components if c["labels_reach_counter"] for d in c["provenance"]["trained_on"])


__all__ = ["CellContext"]
