"""harness.data.images: every stored mode becomes (H, W, 3) uint8 RGB; corrupt/truncated files -> DataError."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from harness.data.images import image_size, read_image, read_image_with_meta
from harness.errors import DataError


def _noise(h=20, w=30, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def test_rgb_png_roundtrip_exact(tmp_path):
    a = _noise()
    Image.fromarray(a).save(tmp_path / "a.png")
    img, meta = read_image_with_meta(tmp_path / "a.png")
    assert img.dtype == np.uint8 and img.shape == (20, 30, 3)
    np.testing.assert_array_equal(img, a)
    assert meta["original_mode"] == "RGB" and meta["original_size"] == (20, 30)


def test_grayscale_expanded_to_three_equal_channels(tmp_path):
    g = _noise(c=0)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    img, meta = read_image_with_meta(tmp_path / "g.png")
    assert img.shape == (20, 30, 3) and meta["original_mode"] == "L"
    for ch in range(3):
        np.testing.assert_array_equal(img[:, :, ch], g)


def test_grayscale_jpeg(tmp_path):
    Image.fromarray(_noise(c=0), "L").save(tmp_path / "g.jpg")
    img, meta = read_image_with_meta(tmp_path / "g.jpg")
    assert img.shape == (20, 30, 3) and meta["original_mode"] == "L"
    assert (img[:, :, 0] == img[:, :, 2]).all()


def test_rgba_alpha_dropped_not_composited(tmp_path):
    a = _noise(c=4)
    a[:, :, 3] = 0  # fully transparent: compositing would change the colours
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    img, meta = read_image_with_meta(tmp_path / "a.png")
    assert meta["original_mode"] == "RGBA" and img.shape == (20, 30, 3)
    np.testing.assert_array_equal(img, a[:, :, :3])


def test_la_and_palette(tmp_path):
    la = _noise(c=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(img[:, :, 1], la[:, :, 0])

    rgb = Image.fromarray(_noise())
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    img, meta = read_image_with_meta(tmp_path / "p.png")
    assert meta["original_mode"] == "P"
    np.testing.assert_array_equal(img, np.asarray(pal.convert("RGB")))


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    img, meta = read_image_with_meta(tmp_path / "c.jpg")
    assert meta["original_mode"] == "CMYK" and img.shape == (20, 30, 3)
    assert img[..., 0].mean() > 200 and img[..., 1].mean() < 60 and img[..., 2].mean() < 60


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    a = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    img, meta = read_image_with_meta(tmp_path / "d.png")
    assert meta["original_mode"].startswith("I")
    assert img.dtype == np.uint8 and img.shape == (20, 30, 3)
    assert img.min() == 0 and img.max() == 255  # clipping would saturate almost everything at 255
    expected = np.round(a.astype(np.float64) * 255 / 65535)
    assert np.abs(img[:, :, 0].astype(int) - expected).max() <= 1
    assert np.all(np.diff(img[:, :, 0].ravel().astype(int)) >= 0)  # monotone ramp stays monotone


def test_32bit_int_image_16bit_range(tmp_path):
    a = np.full((4, 5), 65535, np.int32)
    a[0, 0] = 0
    Image.fromarray(a, "I").save(tmp_path / "i.tif")
    img = read_image(tmp_path / "i.tif")
    assert img[0, 0, 0] == 0 and img[1, 1, 0] == 255


def test_exif_orientation_not_applied(tmp_path):
    a = _noise(h=10, w=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" on display
    Image.fromarray(a).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    img = read_image(tmp_path / "o.jpg")
    assert img.shape == (10, 40, 3)  # stored-pixel orientation, as the annotations are
    assert image_size(tmp_path / "o.jpg") == (10, 40)


def test_image_size_without_decoding(tmp_path):
    Image.fromarray(_noise(h=17, w=23)).save(tmp_path / "s.jpg")
    assert image_size(tmp_path / "s.jpg") == (17, 23)


def _good_jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(_noise(h=64, w=64)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_raises_dataerror(tmp_path):
    data = _good_jpeg_bytes()
    path = tmp_path / "IMG_trunc.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        read_image(path)
    msg = str(err.value)
    assert "IMG_trunc.jpg" in msg and "re-download" in msg and "\n" not in msg


def test_truncated_jpeg_raises_even_if_someone_enabled_truncated_loading(tmp_path, monkeypatch):
    data = _good_jpeg_bytes()
    path = tmp_path / "t.jpg"
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_corrupt_file_raises_dataerror(tmp_path):
    path = tmp_path / "IMG_bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    with pytest.raises(DataError, match="IMG_bad.jpg"):
        read_image(path)
    with pytest.raises(DataError, match="IMG_bad.jpg"):
        image_size(path)


def test_not_an_image_and_missing(tmp_path):
    (tmp_path / "x.jpg").write_text("hello")
    with pytest.raises(DataError, match="x.jpg"):
        image_size(tmp_path / "x.jpg")
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")


def test_large_images_decode_without_the_bomb_warning_and_bombs_are_one_line(tmp_path, monkeypatch, recwarn):
    """A 10 000 × 10 000 crowd photograph is legitimate (Pillow warns above 89 M pixels); above the harness's
    limit the file is refused in one line naming it."""
    from PIL import Image

    import harness.data.images as images
    from harness.errors import DataError

    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow alone would warn (and at 2x: refuse)
    assert images.read_image(path).shape == (200, 300, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == 10_000  # restored
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 50_000)  # 60 000 pixels: over the limit
    with pytest.raises(DataError, match="wide.png has more than 50,000 pixels") as err:
        images.read_image(path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="more than 50,000 pixels"):
        images.image_size(path)
