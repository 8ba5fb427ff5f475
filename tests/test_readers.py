"""Dataset readers: real ShanghaiTech (when HARNESS_DATA is set) and tiny fixtures in every original format."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fixtures_formats import (H, W, make_jhu, make_nwpu, make_qnrf, make_shanghaitech, make_ucf50,
                              random_points, write_annpoints_mat, write_jpeg, write_shanghaitech_mat)
from harness.data.readers import ShanghaiTech, UCFCC50, UCFQNRF, natural_key
from harness.data.readers_official_val import JHUCrowd, NWPUCrowd
from harness.data.splits import n_val_for, split_train_val
from harness.errors import ConfigError, DataError, DataRootError
from harness.plugins import build_registries


def _ids(refs):
    return [r.id for r in refs]


def _mat_location(path: Path) -> np.ndarray:
    return scipy.io.loadmat(str(path))["image_info"][0, 0][0, 0]["location"]


# --------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.parametrize("part,n_train,n_test", [("A", 300, 182), ("B", 400, 316)])
def test_real_shanghaitech_split_sizes(data_root, part, n_train, n_test):
    ds = ShanghaiTech(data_root, part)
    train, val, test = ds.samples("train"), ds.samples("val"), ds.samples("test")
    assert len(val) == n_val_for(n_train, 0.1) == round(0.1 * n_train)
    assert len(train) + len(val) == n_train and len(test) == n_test
    assert not set(_ids(train)) & set(_ids(val))
    assert {r.split for r in val} == {"val"} and {r.split for r in train} == {"train"}
    # val is taken from train_data, never from test_data
    assert all("train_data" in str(r.image_path) for r in val)
    assert _ids(test) == sorted(_ids(test), key=lambda s: int(s.split("_")[1]))


@pytest.mark.realdata
def test_real_sha_counts_match_mat(data_root):
    ds = ShanghaiTech(data_root, "A")
    refs = {r.id: r for r in ds.samples("train") + ds.samples("val")}
    gt_dir = data_root / "ShanghaiTech" / "part_A" / "train_data" / "ground-truth"
    for id in ("IMG_1", "IMG_2", "IMG_10", "IMG_123"):
        s = refs[id].load()
        loc = _mat_location(gt_dir / f"GT_{id}.mat")
        assert s.count == len(loc) and s.meta["n_points_dropped"] == 0
        np.testing.assert_array_equal(s.points, loc)
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        assert s.points.dtype == np.float64 and s.points.shape == (len(loc), 2)
    test_ref = ds.samples("test")[0]
    assert test_ref.id == "IMG_1"
    assert test_ref.load().count == len(_mat_location(
        data_root / "ShanghaiTech/part_A/test_data/ground-truth/GT_IMG_1.mat"))


@pytest.mark.realdata
def test_real_root_can_point_at_shanghaitech_or_part(data_root):
    by_data = ShanghaiTech(data_root, "B").samples("test")
    by_sht = ShanghaiTech(data_root / "ShanghaiTech", "B").samples("test")
    by_part = ShanghaiTech(data_root / "ShanghaiTech" / "part_B", "B").samples("test")
    assert _ids(by_data) == _ids(by_sht) == _ids(by_part)
    assert by_part[0].image_path == by_data[0].image_path


@pytest.mark.realdata
def test_real_files_under_final_and_ground_truth_spellings(data_root, tmp_path):
    src = data_root / "ShanghaiTech" / "part_A"
    for split in ("train", "test"):
        for n in (1, 2, 10):
            dst = tmp_path / "ShanghaiTech" / "part_A_final" / f"{split}_data"
            (dst / "images").mkdir(parents=True, exist_ok=True)
            (dst / "ground_truth").mkdir(parents=True, exist_ok=True)
            (dst / "images" / f"IMG_{n}.jpg").symlink_to(src / f"{split}_data/images/IMG_{n}.jpg")
            shutil.copy(src / f"{split}_data/ground-truth/GT_IMG_{n}.mat", dst / "ground_truth")
    ds = ShanghaiTech(tmp_path, "A")
    assert ds.root.name == "part_A_final"
    assert _ids(ds.samples("test")) == ["IMG_1", "IMG_2", "IMG_10"]
    s = ds.samples("test")[2].load()
    assert s.count == len(_mat_location(src / "test_data/ground-truth/GT_IMG_10.mat"))


# --------------------------------------------------------------------------------------------- ShanghaiTech fixtures


def test_sht_fixture_points_match_written_and_natural_order(tmp_path):
    written = make_shanghaitech(tmp_path, "B", n_train=12, n_test=11)
    ds = ShanghaiTech(tmp_path, "B")
    assert ds.name == "SHB"
    test = ds.samples("test")
    assert _ids(test) == [f"IMG_{n}" for n in range(1, 12)]  # IMG_2 before IMG_10
    for ref in test:
        s = ref.load()
        np.testing.assert_allclose(s.points, written[("test", ref.id)])
        assert s.image.shape == (H, W, 3) and s.meta["original_size"] == (H, W)
        assert s.meta["annotation_path"].endswith(f"GT_{ref.id}.mat")
    train, val = ds.samples("train"), ds.samples("val")
    assert sorted(_ids(train) + _ids(val), key=natural_key) == [f"IMG_{n}" for n in range(1, 13)]
    assert len(val) == n_val_for(12, 0.1) == 1


def test_sht_zero_heads(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=7)
    s = {r.id: r for r in ShanghaiTech(tmp_path, "A").samples("test")}["IMG_7"].load()  # 7 % 7 == 0 heads
    assert s.points.shape == (0, 2) and s.count == 0 and s.meta["n_points_dropped"] == 0


def test_points_outside_image_dropped_and_counted(tmp_path, caplog):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=2)
    inside = np.array([[1.0, 1.0], [W - 0.01, H - 0.01], [0.0, 0.0]])
    outside = np.array([[W, 5.0], [5.0, H + 3], [-0.5, 2.0], [np.nan, 3.0]])
    write_shanghaitech_mat(tmp_path / "ShanghaiTech/part_A/test_data/ground-truth/GT_IMG_2.mat",
                           np.vstack([inside[:2], outside, inside[2:]]))
    ref = ShanghaiTech(tmp_path, "A").samples("test")[1]
    with caplog.at_level(logging.WARNING, logger="harness.data"):
        s = ref.load()
    np.testing.assert_array_equal(s.points, inside)
    assert s.meta["n_points_dropped"] == 4 and s.meta["n_points_annotated"] == 7
    assert any("IMG_2" in r.getMessage() and "dropped 4" in r.getMessage() for r in caplog.records)


def test_sht_transposed_location_is_read_by_its_own_count_or_refused(tmp_path):
    """A location stored as (2, N) was read as 2 heads (GT 61 -> 2): now the file's number field decides."""
    make_shanghaitech(tmp_path, "B", n_train=2, n_test=4)
    gt = tmp_path / "ShanghaiTech/part_B/test_data/ground-truth"
    pts = random_points(61, seed=3)
    write_shanghaitech_mat(gt / "GT_IMG_1.mat", pts, transposed=True)  # number = 61 agrees with the transpose
    write_shanghaitech_mat(gt / "GT_IMG_2.mat", pts, transposed=True, number=None)  # no count: ambiguous
    write_shanghaitech_mat(gt / "GT_IMG_3.mat", pts, number=60)  # count contradicts the points
    write_shanghaitech_mat(gt / "GT_IMG_4.mat", pts[:2], transposed=True)  # (2, 2): the stored layout is kept
    refs = ShanghaiTech(tmp_path, "B").samples("test")
    np.testing.assert_allclose(refs[0].load().points, pts)
    with pytest.raises(DataError, match=r"GT_IMG_2.mat: .*shape \(2, 61\).*no head count") as exc:
        refs[1].load()
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match=r"GT_IMG_3.mat: .*shape \(61, 2\) but the file's head count is 60"):
        refs[2].load()
    assert refs[3].load().count == 2


def test_two_image_files_with_one_id_are_an_error_naming_both(tmp_path):
    """IMG_3.jpg plus a stray IMG_3.png: directory order used to pick one silently."""
    make_shanghaitech(tmp_path, "B", n_train=2, n_test=4)
    write_jpeg(tmp_path / "ShanghaiTech/part_B/test_data/images/IMG_3.png")
    with pytest.raises(DataError, match=r"images: 1 id\(s\) with two files \(IMG_3.jpg and IMG_3.png\)") as exc:
        ShanghaiTech(tmp_path, "B").samples("test")
    assert "keep one file per image" in str(exc.value)


def test_sht_mat_with_wrong_keys(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=3)
    bad = tmp_path / "ShanghaiTech/part_A/test_data/ground-truth/GT_IMG_3.mat"
    scipy.io.savemat(str(bad), {"points": np.zeros((3, 2))})
    ref = ShanghaiTech(tmp_path, "A").samples("test")[2]
    with pytest.raises(DataError) as err:
        ref.load()
    msg = str(err.value)
    assert "GT_IMG_3.mat" in msg and "image_info[0,0][0,0]['location']" in msg and "points" in msg


def test_sht_mat_unreadable(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=1)
    (tmp_path / "ShanghaiTech/part_A/test_data/ground-truth/GT_IMG_1.mat").write_bytes(b"garbage" * 40)
    with pytest.raises(DataError, match="GT_IMG_1.mat"):
        ShanghaiTech(tmp_path, "A").samples("test")[0].load()


def test_images_without_annotation_listed_in_one_error(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=9)
    gt = tmp_path / "ShanghaiTech/part_A/test_data/ground-truth"
    for n in (3, 5, 6, 8, 9):
        (gt / f"GT_IMG_{n}.mat").unlink()
    with pytest.raises(DataError) as err:
        ShanghaiTech(tmp_path, "A").samples("test")
    msg = str(err.value)
    assert "5 image(s) without annotation" in msg and "IMG_3.jpg (missing ground-truth/GT_IMG_3.mat)" in msg
    assert "IMG_6.jpg" in msg and "and 2 more" in msg and "\n" not in msg


def test_annotation_without_image(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=4, n_test=2)
    (tmp_path / "ShanghaiTech/part_A/train_data/images/IMG_4.jpg").unlink()
    ds = ShanghaiTech(tmp_path, "A")
    assert len(ds.samples("test")) == 2  # the other split still lists
    with pytest.raises(DataError, match=r"1 annotation\(s\) without image: GT_IMG_4.mat \(missing images/IMG_4.jpg\)"):
        ds.samples("val")


def test_corrupt_and_truncated_jpeg_in_dataset(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=2)
    img_dir = tmp_path / "ShanghaiTech/part_A/test_data/images"
    big = write_jpeg(img_dir / "IMG_1.jpg", h=64, w=64)
    big.write_bytes(big.read_bytes()[:300])
    (img_dir / "IMG_2.jpg").write_bytes(b"not a jpeg at all")
    refs = ShanghaiTech(tmp_path, "A").samples("test")
    for ref in refs:
        with pytest.raises(DataError, match=f"{ref.id}.jpg.*re-download"):
            ref.load()
        with pytest.raises(DataError):
            ref.load_image()


def test_missing_data_root_and_dataset_folder(tmp_path, monkeypatch):
    with pytest.raises(DataRootError) as err:
        ShanghaiTech(tmp_path / "nowhere", "A")
    assert "nowhere" in str(err.value) and "--data-root" in str(err.value) and "HARNESS_DATA" in str(err.value)
    with pytest.raises(DataRootError) as err:
        ShanghaiTech(tmp_path, "A")  # root exists, no ShanghaiTech inside
    assert str(tmp_path / "ShanghaiTech" / "part_A") in str(err.value) and "--data-root" in str(err.value)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    with pytest.raises(DataRootError, match="HARNESS_DATA"):
        ShanghaiTech(None, "A")
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=1)
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert len(ShanghaiTech(None, "A").samples("test")) == 1


def test_missing_split_folder(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=1)
    shutil.rmtree(tmp_path / "ShanghaiTech/part_A/test_data/ground-truth")
    with pytest.raises(DataRootError, match="ground-truth"):
        ShanghaiTech(tmp_path, "A").samples("test")


def test_unknown_split(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=1)
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        ShanghaiTech(tmp_path, "A").samples("dev")


def test_load_image_only_needs_no_annotation(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=1)
    ref = ShanghaiTech(tmp_path, "A").samples("test")[0]
    (tmp_path / "ShanghaiTech/part_A/test_data/ground-truth/GT_IMG_1.mat").write_bytes(b"")
    assert ref.unlabelled().load_image().shape == (H, W, 3)


# --------------------------------------------------------------------------------------------- UCF_CC_50


@pytest.mark.parametrize("fold", [1, 3, 5])
def test_ucf50_five_fold_protocol(tmp_path, fold):
    written = make_ucf50(tmp_path)
    ds = UCFCC50(tmp_path, fold)
    test = ds.samples("test")
    assert _ids(test) == [str(i) for i in range(10 * fold - 9, 10 * fold + 1)]
    train, val = ds.samples("train"), ds.samples("val")
    assert len(train) + len(val) == 40 and len(val) == n_val_for(40, 0.1)
    assert not set(_ids(train) + _ids(val)) & set(_ids(test))
    s = test[0].load()
    assert s.image.shape == (H, W, 3) and s.meta["original_mode"] == "L"
    np.testing.assert_allclose(s.points, written[("all", test[0].id)])


def test_ucf50_pooled_protocol_lists_all_50_and_its_folds(tmp_path):
    from harness.data.readers import UCFCC50Pooled

    make_ucf50(tmp_path)
    ds = UCFCC50Pooled(tmp_path)
    assert ds.name == "UCF50" and ds.protocol == "5-fold pooled"
    assert _ids(ds.samples("test")) == [str(i) for i in range(1, 51)]
    assert [f.name for f in ds.folds] == [f"UCF50-F{k}" for k in range(1, 6)]
    assert sorted(i for f in ds.folds for i in _ids(f.samples("test"))) == sorted(_ids(ds.samples("test")))
    train, val = ds.samples("train"), ds.samples("val")  # as a source for another target: all 50, 5 held out
    assert len(train) == 45 and len(val) == 5


def test_ucf50_wrong_key_and_zero_heads(tmp_path):
    make_ucf50(tmp_path)
    write_annpoints_mat(tmp_path / "UCF_CC_50/2_ann.mat", np.zeros((0, 2)))
    scipy.io.savemat(str(tmp_path / "UCF_CC_50/3_ann.mat"), {"image_info": np.zeros((2, 2))})
    refs = UCFCC50(tmp_path, 1).samples("test")
    assert refs[1].load().points.shape == (0, 2)
    with pytest.raises(DataError, match=r"3_ann.mat.*'annPoints'.*image_info"):
        refs[2].load()


# --------------------------------------------------------------------------------------------- UCF-QNRF


@pytest.mark.parametrize("folder", ["UCF-QNRF_ECCV18", "UCF-QNRF"])
def test_qnrf(tmp_path, folder):
    written = make_qnrf(tmp_path, n_train=10, n_test=4, folder=folder)
    ds = UCFQNRF(tmp_path)
    test = ds.samples("test")
    assert _ids(test) == ["img_0001", "img_0002", "img_0003", "img_0004"]
    assert len(ds.samples("train")) + len(ds.samples("val")) == 10 and len(ds.samples("val")) == 1
    for ref in test + ds.samples("val"):
        np.testing.assert_allclose(ref.load().points, written[("test" if ref.split == "test" else "train", ref.id)])
    assert UCFQNRF(tmp_path / folder).root == ds.root


def test_qnrf_missing_annotation(tmp_path):
    make_qnrf(tmp_path, n_train=3, n_test=2)
    (tmp_path / "UCF-QNRF_ECCV18/Test/img_0002_ann.mat").unlink()
    with pytest.raises(DataError, match="img_0002.jpg \\(missing img_0002_ann.mat\\)"):
        UCFQNRF(tmp_path).samples("test")


# --------------------------------------------------------------------------------------------- JHU-Crowd++


def test_jhu_official_splits_points_and_meta(tmp_path):
    written = make_jhu(tmp_path, {"train": 5, "val": 3, "test": 4})
    ds = JHUCrowd(tmp_path)
    sizes = {s: len(ds.samples(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 5, "val": 3, "test": 4}
    assert _ids(ds.samples("val")) == ["0006", "0007", "0008"]  # the official val, not held out of train
    for split in ("train", "val", "test"):
        for ref in ds.samples(split):
            s = ref.load()
            w = written[(split, ref.id)]
            np.testing.assert_array_equal(s.points, w["points"])
            np.testing.assert_array_equal(s.meta["boxes"], w["boxes"])
            np.testing.assert_array_equal(s.meta["occlusion"], w["occlusion"])
            np.testing.assert_array_equal(s.meta["blur"], w["blur"])
            for k, v in w["labels"].items():
                assert s.meta[k] == v
    first = ds.samples("train")[0].load()  # empty gt file = 0 heads
    assert first.points.shape == (0, 2) and first.meta["boxes"].shape == (0, 4)


def test_jhu_points_outside_filter_per_head_arrays(tmp_path):
    make_jhu(tmp_path, {"train": 1, "val": 1, "test": 1})
    (tmp_path / "jhu_crowd_v2.0/test/gt/0003.txt").write_text(f"3 4 5 6 1 0\n{W + 10} 4 5 6 2 1\n7 8 9 9 3 1\n")
    s = JHUCrowd(tmp_path / "jhu_crowd_v2.0").samples("test")[0].load()
    np.testing.assert_array_equal(s.points, [[3, 4], [7, 8]])
    np.testing.assert_array_equal(s.meta["occlusion"], [1, 3])
    assert s.meta["n_points_dropped"] == 1


def test_jhu_malformed_line_and_missing_image(tmp_path):
    make_jhu(tmp_path, {"train": 2, "val": 1, "test": 1})
    (tmp_path / "jhu_crowd_v2.0/val/gt/0003.txt").write_text("1 2 3 4 1 0\nhello world\n")
    with pytest.raises(DataError, match="0003.txt line 2"):
        JHUCrowd(tmp_path).samples("val")[0].load()
    (tmp_path / "jhu_crowd_v2.0/train/images/0002.jpg").unlink()
    with pytest.raises(DataError, match="0002.txt \\(missing images/0002.jpg\\)"):
        JHUCrowd(tmp_path).samples("train")


# --------------------------------------------------------------------------------------------- NWPU-Crowd


def test_nwpu_official_splits_and_points(tmp_path):
    written = make_nwpu(tmp_path, {"train": 5, "val": 3, "test": 3})
    ds = NWPUCrowd(tmp_path)
    assert [len(ds.samples(s)) for s in ("train", "val", "test")] == [5, 3, 3]
    for split in ("train", "val"):
        for ref in ds.samples(split):
            s = ref.load()
            np.testing.assert_allclose(s.points, written[(split, ref.id)])
            assert s.meta["human_num"] == len(written[(split, ref.id)])
    assert ds.samples("train")[0].load().points.shape == (0, 2)


def test_nwpu_test_labels_withheld(tmp_path):
    make_nwpu(tmp_path, {"train": 2, "val": 1, "test": 2})
    ref = NWPUCrowd(tmp_path).samples("test")[0]
    assert ref.annotation_path is None
    assert ref.load_image().shape == (H, W, 3)
    with pytest.raises(DataError) as err:
        ref.load()
    assert "withheld" in str(err.value) and "'val'" in str(err.value) and ref.id in str(err.value)


def test_nwpu_test_jsons_used_when_present(tmp_path):
    written = make_nwpu(tmp_path, {"train": 1, "val": 1, "test": 2}, with_test_jsons=True)
    ref = NWPUCrowd(tmp_path).samples("test")[1]
    np.testing.assert_allclose(ref.load().points, written[("test", ref.id)])


def test_nwpu_bad_json_and_missing(tmp_path):
    make_nwpu(tmp_path, {"train": 3, "val": 1, "test": 1})
    (tmp_path / "NWPU-Crowd/jsons/0002.json").write_text('{"human_num": 3}')
    (tmp_path / "NWPU-Crowd/jsons/0003.json").write_text('{"points": [[1, 2], ')
    refs = NWPUCrowd(tmp_path).samples("train")
    with pytest.raises(DataError, match="0002.json.*'points'"):
        refs[1].load()
    with pytest.raises(DataError, match="0003.json"):
        refs[2].load()
    (tmp_path / "NWPU-Crowd/jsons/0004.json").unlink()
    with pytest.raises(DataError, match="0004.jpg \\(missing jsons/0004.json\\)"):
        NWPUCrowd(tmp_path).samples("val")
    from fixtures_formats import write_jpeg

    write_jpeg(tmp_path / "NWPU-Crowd/images/0001.png")  # a stray second file for one id
    with pytest.raises(DataError, match="1 id\\(s\\) with two image files: 0001.jpg and 0001.png"):
        NWPUCrowd(tmp_path).samples("train")


# --------------------------------------------------------------------------------------------- splits, registry


def test_split_train_val_deterministic_and_seeded(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=40, n_test=1)
    refs = ShanghaiTech(tmp_path, "A", val_fraction=0.0).samples("train")
    assert len(refs) == 40
    t1, v1 = split_train_val(refs, 0.25, seed=3)
    t2, v2 = split_train_val(refs, 0.25, seed=3)
    _, v3 = split_train_val(refs, 0.25, seed=4)
    assert _ids(v1) == _ids(v2) and _ids(t1) == _ids(t2) and len(v1) == 10
    assert _ids(v1) != _ids(v3)
    assert sorted(_ids(t1) + _ids(v1), key=natural_key) == _ids(refs)
    assert _ids(v1) == sorted(_ids(v1), key=natural_key)  # input order kept
    assert {r.split for r in v1} == {"val"} and {r.split for r in t1} == {"train"}
    np.testing.assert_array_equal(v1[0].load().points, next(r for r in refs if r.id == v1[0].id).load().points)
    with pytest.raises(ValueError):
        split_train_val(refs, 1.0)


def test_held_out_val_refs_load_the_images_they_were_drawn_from(tmp_path):
    """A train image held out as validation (relabelled ``split="val"``, e.g. the Table IV protocol's 20 %) loads the
    same image, points and labels as before, through the ref it was drawn as: the built-in synthetic crowds draw by
    split and index (``val`` has only 10 images: index 11 used to fail), JHU-Crowd++ reads labels by split."""
    from harness.data.synthetic import SyntheticCrowds

    refs = SyntheticCrowds("SYN-PARK").samples("train")
    _, held = split_train_val(refs, 0.5, seed=0)
    assert any(int(r.id.rsplit("_", 1)[1]) >= 10 for r in held)
    for r in held:
        orig = next(o for o in refs if o.id == r.id).load()
        got = r.load()
        np.testing.assert_array_equal(got.image, orig.image)
        np.testing.assert_array_equal(got.points, orig.points)
        assert got.meta["seed"] == orig.meta["seed"]
        np.testing.assert_array_equal(r.load_image(), orig.image)
    make_jhu(tmp_path, {"train": 4, "val": 2, "test": 1})
    jrefs = JHUCrowd(tmp_path).samples("train")
    _, jheld = split_train_val(jrefs, 0.5, seed=0)
    for r in jheld:
        orig, got = next(o for o in jrefs if o.id == r.id).load(), r.load()
        assert got.meta["weather"] == orig.meta["weather"] and "scene" in got.meta


def test_natural_key():
    names = ["IMG_10", "IMG_2", "IMG_1", "img_0003", "IMG_100"]
    assert sorted(names, key=natural_key) == ["IMG_1", "IMG_2", "img_0003", "IMG_10", "IMG_100"]


def test_registered_datasets(tmp_path):
    make_shanghaitech(tmp_path, "A", n_train=2, n_test=3)
    make_ucf50(tmp_path)
    reg = build_registries().datasets
    for alias in ("SHA", "sha", "shanghaitech-a", "part_a", "Part-A"):
        assert reg.resolve(alias) == "SHA"
    assert reg.resolve("ucf_cc_50") == "UCF50"
    for name in ("SHB", "UCF50-F1", "UCF50-F2", "UCF50-F5", "QNRF", "JHU", "NWPU"):
        assert reg.resolve(name) == name
    sha = reg.get("part_a").factory(tmp_path)
    assert sha.name == "SHA" and len(sha.samples("test")) == 3
    f4 = reg.get("UCF50-F4").factory(tmp_path)
    assert f4.name == "UCF50-F4" and _ids(f4.samples("test")) == [str(i) for i in range(31, 41)]
    with pytest.raises(DataRootError):
        reg.get("NWPU").factory(tmp_path)


def test_nwpu_with_an_empty_test_list_is_scored_on_val(tmp_path):
    """Only train/val downloaded (an empty test.txt): NWPU is scored on val, as with withheld test labels, and a run
    plans instead of refusing with "no test images"."""
    from harness.planning import plan_run

    make_nwpu(tmp_path, {"train": 2, "val": 2, "test": 0})
    ds = NWPUCrowd(tmp_path)
    assert ds.samples("test") == [] and ds.eval_split == "val"
    make_nwpu(tmp_path / "b", {"train": 2, "val": 1, "test": 1}, with_test_jsons=True)
    assert NWPUCrowd(tmp_path / "b").eval_split == "test"
    plan = plan_run("SYN-SPARSE→NWPU", "zero", "0", "smoke", None, tmp_path)
    assert plan.cells and plan.datasets["NWPU"].eval_split == "val"


def test_datasets_verify_against_the_official_releases(tmp_path):
    """`harness datasets verify`: a partial download is told apart from the official release (sizes), a garbled
    annotation is named, a complete UCF_CC_50 passes."""
    from click.testing import CliRunner

    from harness.cli import main
    from harness.data.verify import OFFICIAL

    assert OFFICIAL["SHA"] == {"train": 300, "test": 182} and OFFICIAL["NWPU"] == {"train": 3109, "val": 500,
                                                                                   "test": 1500}
    make_shanghaitech(tmp_path, "B", n_train=12, n_test=5)
    (tmp_path / "ShanghaiTech/part_B/train_data/ground-truth/GT_IMG_3.mat").write_bytes(b"not a mat file")
    make_ucf50(tmp_path)
    r = CliRunner().invoke(main, ["datasets", "--data-root", str(tmp_path), "verify", "SHB", "UCF50"])
    assert r.exit_code == 1, r.output
    assert "SHB: DIFFERS — train+val 12 (official 400), test 5 (official 316)" in r.output
    assert "GT_IMG_3.mat" in r.output and "Traceback" not in r.output
    assert "UCF50: ok — test 50" in r.output
    r = CliRunner().invoke(main, ["datasets", "--data-root", str(tmp_path), "verify", "UCF50"])
    assert r.exit_code == 0, r.output


def test_nwpu_boxes_give_the_official_localisation_metrics(tmp_path):
    """NWPU json ``boxes`` (x1, y1, x2, y2) -> per-head integer σ_s / σ_l and A0..A5 level (the official
    val_gt_loc.txt fields), and every cell scored on NWPU gets the official P/R/F1 and per-level recall."""
    from harness import evaluate_counter
    from harness.models.mcnn import mcnn_counter

    make_nwpu(tmp_path, {"train": 2, "val": 3, "test": 0})
    refs = NWPUCrowd(tmp_path).samples("val")
    s = refs[1].load()
    assert len(s.points) and s.meta["nwpu_sigma"].tolist() == [[2, 3]] * len(s.points)  # 4 × 4 boxes
    assert s.meta["nwpu_level"].tolist() == [1] * len(s.points)                            # area 16: A1
    res = evaluate_counter(mcnn_counter("SHA", weights="random"), refs, seed=0)
    nwpu = res.metrics["nwpu"]
    assert set(nwpu) >= {"precision_s", "recall_l", "f1_l", "recall_levels_l", "recall_level_mean_s"}
    assert nwpu["tp_l"] + nwpu["fn_l"] == sum(len(r.load().points) for r in refs)
    assert len(nwpu["recall_levels_s"]) == 6
