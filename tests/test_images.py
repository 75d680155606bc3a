import numpy as np
import pytest
from PIL import Image

from generator.images import MAX_PIXELS, ImageRejected, load_image_set, load_rgb


def _photo(w=64, h=48):
    rng = np.random.default_rng(0)
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None, :]
    a[..., 1] = np.linspace(0, 255, h)[:, None]
    a[..., 2] = rng.integers(0, 255, (h, w))
    return a


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.png"
    Image.fromarray(_photo()).save(p)
    return p


@pytest.mark.parametrize("kind,reason", [
    ("empty", "not an image"),
    ("text", "not an image"),
    ("truncated", "truncated"),
    ("tiny", "too small"),
    ("huge", "too large"),
])
def test_bad_files_rejected_with_reason(tmp_path, kind, reason):
    p = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("hello, I am not a JPEG")
    elif kind == "truncated":
        Image.fromarray(_photo(256, 256)).save(p, "JPEG", quality=95)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "tiny":
        Image.fromarray(_photo(16, 16)).save(p, "JPEG")
    elif kind == "huge":
        side = int(MAX_PIXELS ** 0.5) + 100
        p = tmp_path / "huge.png"
        Image.new("1", (side, side)).save(p)  # compresses to a few kB: a decompression bomb
    with pytest.raises(ImageRejected, match=reason):
        load_rgb(p)


def test_cmyk_converted(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(p, "JPEG", quality=100)  # pure red in CMYK
    im, conv = load_rgb(p)
    r, g, b = np.asarray(im).reshape(-1, 3).mean(0)
    assert im.mode == "RGB" and r > 200 and g < 60 and b < 60
    assert any("CMYK" in c for c in conv)


def test_16bit_scaled(tmp_path):
    p = tmp_path / "deep.png"
    a = np.full((40, 40), 65535 // 2, np.uint16)
    a[:20] = 65535
    Image.fromarray(a).save(p)  # mode I;16
    im, conv = load_rgb(p)
    v = np.asarray(im)[..., 0]
    assert im.mode == "RGB" and v[:20].min() == 255 and abs(int(v[30, 0]) - 127) <= 1
    assert any("16-bit" in c for c in conv)


def test_palette_and_alpha(tmp_path):
    p = tmp_path / "pal.png"
    Image.fromarray(_photo()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(p)
    im, conv = load_rgb(p)
    assert im.mode == "RGB" and any("palette" in c for c in conv)
    q = tmp_path / "alpha.png"
    a = np.zeros((40, 40, 4), np.uint8)
    a[..., 0] = 255
    a[:, :20, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(a, "RGBA").save(q)
    im, conv = load_rgb(q)
    px = np.asarray(im)
    assert tuple(px[5, 5]) == (255, 0, 0) and tuple(px[5, 35]) == (255, 255, 255)
    assert any("alpha" in c for c in conv)


def test_exif_rotation_applied(tmp_path):
    p = tmp_path / "rot.jpg"
    a = np.zeros((40, 80, 3), np.uint8)  # wide image, left half white
    a[:, :40] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(p, "JPEG", exif=exif, quality=100)
    out, conv = load_rgb(p)
    assert out.size == (40, 80)  # now tall
    px = np.asarray(out).mean(axis=2)
    assert px[:40].mean() > 200 and px[40:].mean() < 50  # white half on top after a 90° CW turn
    assert any("EXIF" in c for c in conv)


def test_folder_skips_bad_and_keeps_good(tmp_path, good):
    (tmp_path / "broken.jpg").write_text("nope")
    (tmp_path / "notes.txt").write_text("not an image either")
    items, skipped, notes = load_image_set(tmp_path)
    assert [i.path.name for i in items] == ["good.png"]
    assert {s.path.name for s in skipped} == {"broken.jpg"}
    assert any("notes.txt" in n and "ignored" in n for n in notes)
    assert all(str(s).startswith("skipped ") and s.path.name in str(s) for s in skipped)


def test_manifest_fields_and_hash_note(tmp_path, good):
    (tmp_path / "images.toml").write_text(
        '[[image]]\nfile = "good.png"\ntitle = "A *good* <photo>"\nimagenet_index = 3\n'
        'imagenet_label = "tiger shark"\nlicense = "CC0-1.0"\nsha256 = "deadbeef"\n'
        '[[image]]\nfile = "gone.png"\ntitle = "listed but absent"\n')
    items, skipped, notes = load_image_set(tmp_path)
    assert len(items) == 1 and items[0].imagenet_index == 3 and items[0].title == "A *good* <photo>"
    assert items[0].id == "good"
    assert [s.path.name for s in skipped] == ["gone.png"]
    assert any("sha256 differs" in n for n in notes)
