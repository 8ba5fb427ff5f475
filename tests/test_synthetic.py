"""Synthetic crowds: determinism, exact head points, split separation, the domain gap, registration."""
from __future__ import annotations

import numpy as np
import pytest

from harness.data.synthetic import SPLIT_SIZES, VARIANTS, SyntheticCrowds, render_scene
from harness.errors import DataError
from harness.plugins import get_registries


def test_split_sizes_and_ids():
    ds = SyntheticCrowds("SYN-SPARSE")
    for split, n in SPLIT_SIZES.items():
        refs = ds.samples(split)
        assert len(refs) == n
        assert [r.id for r in refs] == sorted(r.id for r in refs)
        assert all(r.split == split and r.dataset == "SYN-SPARSE" for r in refs)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deterministic_and_points_exact(variant):
    ref = SyntheticCrowds(variant).samples("train")[3]
    s = ref.load()
    img, pts, radii = render_scene(variant, "train", 3)  # uncached re-render from scratch
    np.testing.assert_array_equal(s.image, img)
    np.testing.assert_array_equal(s.points, pts)
    v = VARIANTS[variant]
    assert s.image.shape == (v.height, v.width, 3) and s.image.dtype == np.uint8
    assert s.points.shape == (s.count, 2) and s.points.dtype == np.float64
    lo, hi = v.count_range
    assert lo <= s.count <= hi
    assert len(s.meta["head_radii"]) == s.count
    x, y = s.points[:, 0], s.points[:, 1]
    assert (x >= 0).all() and (x < v.width).all() and (y >= v.horizon * v.height - 1e-9).all()
    assert (y < v.height).all()
    np.testing.assert_array_equal(ref.load_image(), s.image)


def test_head_point_is_head_disc_centre():
    """The nearest (last drawn, never occluded) person's head: the pixel at its point is skin or hair, not
    the background shown at the same place in a scene rendered without people."""
    img, pts, radii = render_scene("SYN-SPARSE", "val", 0)
    x, y = pts[-1]
    r = radii[-1]
    patch = img[int(y - r / 2):int(y + r / 2) + 1, int(x - r / 2):int(x + r / 2) + 1].reshape(-1, 3).astype(int)
    # inside the head disc the colour is near-uniform (skin / hair with 0.5 px blur)
    assert patch.std(axis=0).max() < 60
    # and it differs from the ring around the head (body or background), i.e. there really is a disc there
    ring = img[int(y - 2 * r), int(x)].astype(int)
    assert np.abs(patch.mean(axis=0) - ring).max() > 5


def test_splits_and_indices_differ():
    a = render_scene("SYN-SPARSE", "train", 0)
    b = render_scene("SYN-SPARSE", "test", 0)
    c = render_scene("SYN-SPARSE", "train", 1)
    assert not np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert not (len(a[1]) == len(b[1]) and np.allclose(a[1], b[1]))


def test_domain_gap_density_and_scale():
    sparse = [render_scene("SYN-SPARSE", "val", i) for i in range(4)]
    dense = [render_scene("SYN-DENSE", "val", i) for i in range(4)]
    assert max(len(p) for _, p, _ in sparse) < min(len(p) for _, p, _ in dense)
    assert np.median(np.concatenate([r for *_, r in sparse])) > 2 * np.median(np.concatenate([r for *_, r in dense]))
    # perspective: near (lower) heads are larger than far ones
    _, pts, radii = dense[0]
    assert np.corrcoef(pts[:, 1], radii)[0, 1] > 0.8


def test_loaded_arrays_are_private_copies():
    ref = SyntheticCrowds("SYN-DENSE").samples("val")[0]
    s = ref.load()
    s.image[:] = 0
    s.points[:] = -1
    again = ref.load()
    assert again.image.any() and (again.points >= 0).all()


def test_bad_split_and_variant_one_line_errors():
    with pytest.raises(DataError, match="no split 'dev'"):
        SyntheticCrowds("SYN-SPARSE").samples("dev")
    with pytest.raises(DataError, match="unknown synthetic variant"):
        SyntheticCrowds("SYN-MEDIUM")
    with pytest.raises(DataError, match="index 60"):
        render_scene("SYN-SPARSE", "train", 60)


def test_registered_without_root():
    reg = get_registries().datasets
    for alias, name in [("synthetic-sparse", "SYN-SPARSE"), ("syn_dense", "SYN-DENSE"), ("SYN-SPARSE", "SYN-SPARSE")]:
        spec = reg.get(alias)
        assert spec.name == name and spec.needs_root is False
        ds = spec.factory(None)
        assert ds.name == name and ds.root is None
        assert len(ds.samples("test")) == SPLIT_SIZES["test"]


def test_the_demo_pair_is_one_where_predicting_zero_or_the_source_mean_is_far_off():
    """SYN-PARK / SYN-STREET (the default matrix of `harness run` without a data root): 30 / 10 / 30 images, counts
    that overlap, so the trivial baselines leave a trained counter room to show what it does."""
    from harness.cli import SYNTHETIC_MATRIX

    assert SYNTHETIC_MATRIX == "SYN-PARK→SYN-STREET,SYN-STREET→SYN-PARK"
    park, street = SyntheticCrowds("SYN-PARK"), SyntheticCrowds("SYN-STREET")
    assert [len(park.samples(s)) for s in ("train", "val", "test")] == [30, 10, 30]
    with pytest.raises(DataError, match="images 0..29"):
        from harness.data.synthetic import _check_split

        _check_split(VARIANTS["SYN-PARK"], "train", 30)
    counts = {ds.name: np.array([r.load().count for r in ds.samples("test")]) for ds in (park, street)}
    src_mean = np.mean([r.load().count for r in park.samples("train")])
    tgt = counts["SYN-STREET"]
    assert tgt.mean() > 100 and np.abs(tgt - src_mean).mean() > 25  # zero and source-mean are both far off
    assert counts["SYN-PARK"].min() >= 40 and counts["SYN-STREET"].max() <= 200
