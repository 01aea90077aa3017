import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.io.mask_io import davis_palette, existing_masks, read_mask, write_mask


def test_palette_png_roundtrip_keeps_palette(tmp_path):
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9] = 4
    labels[10:, 20:] = 200
    palette = [(7 * i) % 256 for i in range(768)]
    write_mask(tmp_path / "a.png", labels, palette)
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode == "P" and img.getpalette()[:768] == palette
    back, pal = read_mask(tmp_path / "a.png")
    assert np.array_equal(back, labels) and pal == palette
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left


def test_default_palette_is_davis(tmp_path):
    write_mask(tmp_path / "a.png", np.ones((4, 4), np.uint8))
    _, pal = read_mask(tmp_path / "a.png")
    assert pal[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0] and pal == davis_palette()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    write_mask(tmp_path / "a.png", np.ones((4, 4), np.uint8))
    before = (tmp_path / "a.png").read_bytes()

    def broken_save(self, fp, format=None, **kw):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_mask(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "a.png").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_binary_grey_mask_reads_as_zero_one(tmp_path):
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(tmp_path / "m.png")
    labels, pal = read_mask(tmp_path / "m.png")
    assert labels.tolist() == [[0, 1], [1, 0]] and pal is None


def test_bad_masks(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="is a RGB image; give a label map"):
        read_mask(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot be read as an image"):
        read_mask(tmp_path / "junk.png")
    with pytest.raises(InputError, match="does not exist"):
        read_mask(tmp_path / "missing.png")


def test_existing_masks(tmp_path):
    assert existing_masks(tmp_path / "nope") == []
    (tmp_path / "x.txt").write_text("x")
    write_mask(tmp_path / "b.png", np.ones((2, 2), np.uint8))
    assert [p.name for p in existing_masks(tmp_path)] == ["b.png"]
