"""Semantic masks m^i = f_mask(I_i) of real source images (Aarhus report §III-B eq. 5, §III-B1, §IV-B1).

Three segmenters (the harness's ``segmenter`` kind, :class:`harness.Segmenter`, docs/design.md §5), stacked into one
label map (ids ``0 … len(label_names) − 1``, docs/design.md §3):

- ``head-mask`` (HM, "ground truth heatmap"): the image's ground-truth density map (:func:`harness.density_map`,
  geometry-adaptive Gaussians at the image's own resolution) thresholded at 0.01 (report §IV-B1): ids 0 background,
  1 dense crowd. It needs the head points, so only *labelled* (source) images have one.
- ``crowd-segmentation`` (CM): a torchvision DeepLabV3 (default ``deeplabv3_mobilenet_v3_large``, the report's
  "MobileNet V3 backbone"), pixels whose arg-max class is a crowd class (default VOC ``person`` = 15): ids 0, 1.
- ``surroundings-segmentation`` (SS): a torchvision DeepLabV3 (default ``deeplabv3_resnet50``) arg-max over its
  classes (21 VOC classes by default: the report's "21-class mask").

The DeepLabV3 weights come from a local file (option ``weights``: a path, or ``"torchvision"`` for torchvision's own
``COCO_WITH_VOC_LABELS_V1`` file already in the torch hub cache; never downloaded here), recorded in provenance
(path and SHA-256); ``"tiny[:seed]"`` builds the architecture with random weights (tests).

:class:`MaskBuilder` stacks the configurations of the report's Table II: ``SHTA_V2`` = HM (2 ids: background, dense
crowd — the report's "1 input label"), ``SHTA_V3`` / ``SSU_V2`` = SS + CM + HM (21 + 1 + 1 = 23 ids): the first map's
ids as they are, each further map's non-background ids painted over it after the ids before. Each segmenter's map of
each image is cached content-addressed (``spade/mask``), and the combined maps are written as editable 8-bit PNG
files (pixel value = label id) that a run can read back (:func:`read_mask_file`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness import ConfigError, DataError, Provenance, Segmentation, WeightsError, active_meter, note_weights

#: the report's mask configurations (Table II): segmenters stacked bottom to top
CONFIGS: dict[str, tuple[str, ...]] = {
    "SHTA_V2": ("head-mask",),
    "SHTA_V3": ("surroundings-segmentation", "crowd-segmentation", "head-mask"),
    "SSU_V2": ("surroundings-segmentation", "crowd-segmentation", "head-mask"),
}

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
ARCHS = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101")


# ----------------------------------------------------------------------------------------- HM

class HeadMaskSegmenter:
    """HM: ``density_map(points) > threshold`` (report §III-B1 "ground truth heatmap", §IV-B1 threshold 0.01).

    Args:
        threshold: people per pixel above which a pixel is dense crowd (report: 0.01, i.e. heads closer than
            about 10 px apart).
        kernel, sigma, beta, k: the density map's kernel (:func:`harness.density_map`; MCNN eq. 1 adaptive
            kernel by default).
    """

    name = "head-mask"
    label_names = ("background", "dense crowd")
    uses_points = True

    def __init__(self, threshold: float = 0.01, kernel: str = "adaptive", sigma: float = 15.0, beta: float = 0.3,
                 k: int = 3):
        if not threshold > 0:
            raise ConfigError(f"head-mask threshold must be > 0 people per pixel, got {threshold!r}")
        self.threshold, self.kernel, self.sigma, self.beta, self.k = float(threshold), kernel, sigma, beta, k
        self.provenance = Provenance("ground-truth head points (no weights)")

    def key(self) -> dict:
        return {"segmenter": self.name, "threshold": self.threshold, "kernel": self.kernel, "sigma": self.sigma,
                "beta": self.beta, "k": self.k}

    def density(self, shape: Sequence[int], points: np.ndarray) -> np.ndarray:
        """The ``(H, W) float32`` ground-truth density whose threshold is the mask."""
        from harness import density_map

        return density_map(points, tuple(shape[:2]), kernel=self.kernel, sigma=self.sigma, beta=self.beta, k=self.k)

    def segment(self, image: np.ndarray, points: np.ndarray | None = None) -> Segmentation:
        """``image (H, W, 3)``, ``points (N, 2)`` (x, y) px -> labels ``(H, W) int32``: 1 where the density exceeds
        the threshold.

        Raises:
            ConfigError: no points (HM needs the labels: source images only). DataError: malformed points."""
        if points is None:
            raise ConfigError("head-mask needs the image's head points (it thresholds the ground-truth density): "
                              "it exists for labelled source images only")
        dens = self.density(np.shape(image), points)
        labels = (dens > self.threshold).astype(np.int32)
        return Segmentation(labels, self.label_names, meta={"dense_fraction": float(labels.mean()),
                                                            "max_density": float(dens.max(initial=0.0))})


# ----------------------------------------------------------------------------------------- DeepLabV3

def torchvision_weights_file(arch: str) -> tuple[Path, str]:
    """``(file, url)``: where torchvision keeps the ``COCO_WITH_VOC_LABELS_V1`` weights of ``arch``
    (``<torch hub>/checkpoints``) and where they are downloaded from."""
    import torch
    from torchvision.models.segmentation import (DeepLabV3_MobileNet_V3_Large_Weights, DeepLabV3_ResNet50_Weights,
                                                 DeepLabV3_ResNet101_Weights)

    enum = {"deeplabv3_mobilenet_v3_large": DeepLabV3_MobileNet_V3_Large_Weights,
            "deeplabv3_resnet50": DeepLabV3_ResNet50_Weights, "deeplabv3_resnet101": DeepLabV3_ResNet101_Weights}[arch]
    url = enum.COCO_WITH_VOC_LABELS_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


class DeepLabSegmenter:
    """A torchvision DeepLabV3 as a segmenter (CM or SS, see the module notes).

    Args:
        name: ``crowd-segmentation`` or ``surroundings-segmentation``.
        arch: ``deeplabv3_mobilenet_v3_large`` | ``deeplabv3_resnet50`` | ``deeplabv3_resnet101``.
        weights: a local state-dict file, ``"torchvision"`` (the cached torchvision file) or ``"tiny[:seed]"``.
        num_classes: the model's output classes (VOC labels: 21).
        crowd_classes: CM only: the output classes that are crowd (VOC ``person``: 15); None: SS (every class).
        class_names: names of the output classes (SS's label names; default VOC's when ``num_classes`` is 21).
        input_size: the shorter image side fed to the network (torchvision's preset: 520); logits are resized back.
        device: ``cpu`` / ``cuda[:n]``.

    Raises:
        WeightsError: a missing or unreadable weights file (one line saying how to provide it).
        ConfigError: an unknown arch or inconsistent classes.
    """

    uses_points = False

    def __init__(self, name: str, *, arch: str, weights: str, num_classes: int = 21,
                 crowd_classes: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 input_size: int | None = 520, device: str = "cpu"):
        import torch
        from harness import file_sha256, load_into, read_state_dict
        from torchvision.models import segmentation as seg

        if arch not in ARCHS:
            raise ConfigError(f"{name}: arch {arch!r} is not one of {', '.join(ARCHS)}")
        if crowd_classes is not None and (not crowd_classes or any(not 0 <= c < num_classes for c in crowd_classes)):
            raise ConfigError(f"{name}: crowd_classes {list(crowd_classes)} must be ids in 0..{num_classes - 1}")
        names = tuple(class_names) if class_names else (VOC_CLASSES if num_classes == 21 else
                                                        tuple(f"class {i}" for i in range(num_classes)))
        if len(names) != num_classes:
            raise ConfigError(f"{name}: {len(names)} class_names for {num_classes} classes")
        self.name, self.arch, self.num_classes, self.device = name, arch, int(num_classes), device
        self.crowd_classes = None if crowd_classes is None else tuple(int(c) for c in crowd_classes)
        self.input_size = input_size
        self.label_names = ("background", "crowd") if self.crowd_classes is not None else names
        tiny = weights == "tiny" or (weights.startswith("tiny:") and weights[5:].isdigit())
        state, sha = None, ""
        if tiny:
            identity = weights
        else:
            if weights == "torchvision":
                path, url = torchvision_weights_file(arch)
                if not path.is_file() and active_meter() is not None:  # a dry run: random weights, same cost
                    note_weights(f"{name} {arch}", f"architecture only ({path.name} not in {path.parent})")
                    path = None
                elif not path.is_file():
                    raise WeightsError(f"{name}: torchvision's {arch} weights are not in {path.parent}: download {url} "
                                       f"to {path} where the internet is reachable, or pass a local file as option "
                                       f"'weights' of {name}")
            else:
                path = Path(weights).expanduser()
                if not path.is_file():
                    raise WeightsError(f"{name}: weights file {weights} does not exist: pass a local {arch} state dict "
                                       f"(e.g. torchvision's COCO_WITH_VOC_LABELS_V1 file) as option 'weights' of "
                                       f"{name}, or 'torchvision' for the file in the torch hub cache")
            if path is not None:
                state = read_state_dict(path, f"{name}: torchvision {arch} weights")
                sha = file_sha256(path)
                identity = str(path.resolve())
            else:
                identity = f"architecture only: {arch}"
        aux = bool(state) and any(k.startswith("aux_classifier.") for k in state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(weights[5:]) if weights.startswith("tiny:") else 0)
            model = getattr(seg, arch)(weights=None, weights_backbone=None, num_classes=self.num_classes,
                                       aux_loss=aux)
        if state is not None:
            load_into(model, state, f"{name}: {arch} with {num_classes} classes (set matching arch / num_classes)",
                      str(weights))
        self.model = model.to(device).eval()
        self.weights_identity, self.sha256 = identity, sha
        self.provenance = Provenance(weights=f"{arch}:{identity}", trained_on=frozenset(), sha256=sha)

    def key(self) -> dict:
        return {"segmenter": self.name, "arch": self.arch, "weights": self.weights_identity, "sha256": self.sha256,
                "num_classes": self.num_classes, "crowd_classes": self.crowd_classes, "input_size": self.input_size}

    def segment(self, image: np.ndarray, points: np.ndarray | None = None) -> Segmentation:
        """``image (H, W, 3) uint8`` RGB -> labels ``(H, W) int32`` (``points`` are ignored). The image is resized to
        ``input_size`` on its shorter side, ImageNet-normalised; the logits are resized back (bilinear) before the
        arg-max."""
        import torch
        import torch.nn.functional as F

        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise DataError(f"{self.name}: image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255).to(self.device)
        if self.input_size:
            f = self.input_size / min(h, w)
            x = F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear",
                              align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)
        with torch.no_grad():
            logits = self.model((x - mean) / std)["out"]
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            cls = logits.argmax(1)[0].cpu().numpy()
        if self.crowd_classes is not None:
            labels = np.isin(cls, self.crowd_classes).astype(np.int32)
        else:
            labels = cls.astype(np.int32)
        return Segmentation(labels, self.label_names, meta={"arch": self.arch})


# ----------------------------------------------------------------------------------------- stacking

def stack(parts: Sequence[Segmentation]) -> Segmentation:
    """One label map from several (report §III-B1: "layers of masks stacked on top of each other").

    The first map keeps its ids ``0 … n₀ − 1``; every further map's non-background ids ``1 … nᵢ − 1`` are painted
    over it as ids after all ids before (later maps on top). Names follow the ids.

    Raises:
        ConfigError: no maps, maps of different shapes, or more than 256 labels (8-bit mask files)."""
    if not parts:
        raise ConfigError("stack needs at least one label map")
    shape = parts[0].labels.shape
    if any(p.labels.shape != shape for p in parts):
        raise ConfigError(f"label maps of different shapes: {[p.labels.shape for p in parts]}")
    out = np.asarray(parts[0].labels, dtype=np.int32).copy()
    names = list(parts[0].label_names)
    for p in parts[1:]:
        lab = np.asarray(p.labels)
        on = lab > 0
        out[on] = lab[on] + len(names) - 1
        names += list(p.label_names[1:])
    if len(names) > 256:
        raise ConfigError(f"{len(names)} labels do not fit 8-bit mask files (at most 256)")
    return Segmentation(out, tuple(names))


@dataclass
class MaskBuilder:
    """The label map of one source image from the segmenters of a configuration (see the module notes).

    Attributes:
        segmenters: the built segmenters, bottom to top.
        cache: an :class:`harness.ArtifactCache` for each segmenter's map of each image (``spade/mask``; None: no
            caching).
    """

    segmenters: Sequence[Any]
    cache: Any = None

    @property
    def label_names(self) -> tuple[str, ...]:
        names = list(self.segmenters[0].label_names)
        for s in self.segmenters[1:]:
            names += list(s.label_names[1:])
        return tuple(names)

    def key(self) -> list:
        return [s.key() for s in self.segmenters]

    def _part(self, seg: Any, image: np.ndarray, points: np.ndarray | None, image_sha: str) -> Segmentation:
        from harness import array_sha256

        if self.cache is None:
            return seg.segment(image, points)
        uses = getattr(seg, "uses_points", True)  # unknown segmenters: the points are part of the key
        key = {"segmenter": seg.key(), "image": image_sha,
               "points": None if points is None or not uses else array_sha256(np.asarray(points, np.float64))}
        path = self.cache.path("spade/mask", key, ".png")
        if not path.exists():
            out = seg.segment(image, points)
            self.cache.get_or_create("spade/mask", key, ".png", lambda p, lab=out.labels: write_mask(p, lab))
        return Segmentation(read_mask_file(path, len(seg.label_names)), tuple(seg.label_names))

    def build(self, image: np.ndarray, points: np.ndarray | None) -> np.ndarray:
        """``(H, W) uint8`` label map of ``image`` (``points``: its head points, needed by HM)."""
        from harness import array_sha256

        sha = array_sha256(np.asarray(image))
        return stack([self._part(s, image, points, sha) for s in self.segmenters]).labels.astype(np.uint8)


# ----------------------------------------------------------------------------------------- files

def write_mask(path: str | Path, labels: np.ndarray) -> None:
    """Save a label map as an 8-bit greyscale PNG (pixel value = label id; editable in any image editor)."""
    from PIL import Image

    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ConfigError(f"label ids {int(lab.min())}..{int(lab.max())} do not fit an 8-bit mask file")
    with open(path, "wb") as fh:
        Image.fromarray(lab.astype(np.uint8)).save(fh, format="PNG")


def read_mask_file(path: str | Path, num_labels: int) -> np.ndarray:
    """A label map from a PNG mask file: ``(H, W) uint8`` ids ``0 … num_labels − 1``.

    Greyscale (``L``), palette (``P``: the palette index is the id) and 16-bit/int files are read as they are; an RGB
    file must have equal channels (a greyscale mask saved as colour).

    Raises:
        DataError: unreadable, colour, or holding ids ``≥ num_labels`` (one line naming the file)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except OSError as exc:
        raise DataError(f"mask {path} cannot be read ({type(exc).__name__}): save it as a PNG of label ids") from None
    if arr.ndim == 3:
        if mode not in ("RGB", "RGBA") or not (arr[..., 0] == arr[..., 1]).all() or \
                not (arr[..., 0] == arr[..., 2]).all():
            raise DataError(f"mask {path} is a colour image ({mode}): save it as greyscale, pixel value = label id")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"mask {path} has shape {arr.shape}: pass a 2-D label map")
    arr = arr.astype(np.int64)
    bad = sorted(set(np.unique(arr[(arr < 0) | (arr >= num_labels)]).tolist()))
    if bad:
        raise DataError(f"mask {path} holds label id(s) {', '.join(map(str, bad[:5]))} outside 0..{num_labels - 1} "
                        f"({num_labels} labels in this configuration)")
    return arr.astype(np.uint8)


def mask_ids(folder: str | Path) -> dict[str, Path]:
    """``{image id: path}`` of the ``*.png`` masks of a folder.

    Raises:
        DataError: not a folder, or no mask in it."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"mask_dir {folder} is not a folder: pass the masks/ folder of a spade cell (or a copy)")
    files = {p.stem: p for p in sorted(folder.glob("*.png"))}
    if not files:
        raise DataError(f"mask_dir {folder} holds no .png mask")
    return files


__all__ = ["CONFIGS", "VOC_CLASSES", "ARCHS", "HeadMaskSegmenter", "DeepLabSegmenter", "MaskBuilder", "stack",
           "write_mask", "read_mask_file", "mask_ids", "torchvision_weights_file"]
