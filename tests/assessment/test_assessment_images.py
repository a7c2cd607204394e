import os

import numpy as np
import pytest
from assessment_helpers import rgb_image, save, write_problem_files

from cardd_d2.assessment.images import ImageLoadError, discover_inputs, load_image, unique_names


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_problem_files(str(tmp_path_factory.mktemp("problems")))


def test_good_image_is_bgr(files, tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    img = load_image(save(rgb, str(tmp_path / "red.png")))
    assert img.bgr.shape == (10, 12, 3) and img.bgr.dtype == np.uint8
    assert img.bgr[0, 0].tolist() == [0, 0, 255] and img.warnings == [] and img.scale == 1.0


@pytest.mark.parametrize("case,expect", [("gray", "grayscale"), ("rgba", "alpha"), ("png16", "16-bit"),
                                         ("cmyk", "CMYK"), ("exif", "EXIF orientation 6")])
def test_converted_modes_are_3_channel_uint8_with_a_warning(files, case, expect):
    img = load_image(files[case])
    assert img.bgr.ndim == 3 and img.bgr.shape[2] == 3 and img.bgr.dtype == np.uint8
    assert any(expect in w for w in img.warnings), img.warnings


def test_mode_specific_values(files):
    assert load_image(files["png16"]).bgr.max() == 255  # 65535 -> 255, not clipped garbage
    rgba = load_image(files["rgba"]).bgr.astype(int)
    src = rgb_image(seed=3)[:, :, ::-1].astype(int)
    # alpha 128/255 over white
    np.testing.assert_allclose(rgba, src * 128 / 255 + 255 * 127 / 255, atol=2)
    rot = load_image(files["exif"])
    assert rot.bgr.shape[:2] == (40, 20) and rot.original_size == (40, 20)


def test_huge_image_downscaled(files):
    img = load_image(files["huge"])
    assert img.width == 10000 and img.original_size == (8, 10050)
    assert img.scale == pytest.approx(10000 / 10050)
    assert any("downscaled from 10050x8" in w for w in img.warnings)
    small = load_image(files["good"], max_side=32)
    assert max(small.bgr.shape[:2]) == 32


def test_large_photos_decode_downscaled_up_to_the_limit(tmp_path, monkeypatch):
    """Pillow's decompression-bomb limit (89 MP by default) does not refuse photos below MAX_PIXELS (200 MP):
    simulated here at a small scale by lowering Pillow's limit under the size of a small JPEG."""
    from PIL import Image, JpegImagePlugin

    import cardd_d2.assessment.images as images

    path = save(rgb_image(h=90, w=120), str(tmp_path / "phone.jpg"), quality=95)
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda im, *a: drafts.append(a) or real_draft(im, *a))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # the photo is > 2x Pillow's limit: Pillow alone refuses it
    img = load_image(path, max_side=30)
    assert img.original_size == (90, 120) and max(img.bgr.shape[:2]) == 30 and drafts  # reduced JPEG decoding
    assert Image.MAX_IMAGE_PIXELS == 4000  # Pillow's global is left as it was
    monkeypatch.setattr(images, "MAX_PIXELS", 10000)
    with pytest.raises(ImageLoadError, match=r"120x90 = 0.0108 MP, more than the limit of 0.01 MP"):
        load_image(path)


@pytest.mark.parametrize("case,reason", [("truncated", "truncated"), ("corrupt", "corrupt"),
                                         ("text_as_jpg", "not an image"), ("empty", "empty file"),
                                         ("txt", "not an image")])
def test_unreadable_files_raise_with_reason(files, case, reason):
    with pytest.raises(ImageLoadError) as ei:
        load_image(files[case])
    assert reason in ei.value.reason and os.path.basename(files[case]) in str(ei.value)


def test_missing_file_and_bytes_input(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(str(tmp_path / "nope.jpg"))
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")
    data = open(save(rgb_image(), str(tmp_path / "x.png")), "rb").read()
    assert load_image(data, name="up.png").bgr.shape == (48, 64, 3)


def test_discover_inputs(files, tmp_path):
    folder = os.path.dirname(files["good"])
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\n{files['good']}\n{os.path.relpath(files['gray'], tmp_path)}\nmissing.jpg\n")
    items = discover_inputs([folder, str(empty), str(lst), str(tmp_path / "nothing_*.jpg"),
                             str(tmp_path / "no_such_file.jpg")])
    by_path = {}
    for it in items:
        by_path.setdefault(it.path, []).append(it)
    assert by_path[str(empty)][0].error == "empty folder (no files)"
    assert "not an image file" in by_path[files["txt"]][0].skip_reason
    assert any(it.error == "file not found" and it.path.endswith("missing.jpg") for it in items)
    assert any(it.error and "glob" in it.error for it in items)
    names = [it.name for it in items]
    assert len(set(names)) == len(names)
    dup_names = {it.name for it in items if it.path in (files["dup_a"], files["dup_b"])}
    assert dup_names == {"a__car", "b__car"}


def test_unique_names_same_stem_same_parent():
    assert unique_names(["x/a.jpg", "x/a.png", "y/b.jpg"]) == ["x__a", "x__a_2", "b"]
