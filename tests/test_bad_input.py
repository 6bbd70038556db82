"""Bad or unusual user input: every bad file is one clear line and exit 2 (never a traceback or a
silently wrong number), and every image mode decodes to the right 8-bit RGB."""
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from lr0fm.cli import main
from lr0fm.datasets.base import DatasetError, bytes_loader, composite_on_white, open_image_file
from lr0fm.datasets.generic import build_csv

HEADER = "model,dataset,resolution,top1,num_classes\n"


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1 and err.startswith("lr0fm: error: "), err
    return err


# ---- lr0fm metrics --accuracies ---------------------------------------------------------------

@pytest.mark.parametrize("content,match", [
    (HEADER + "m,mine,hr,0.5,abc\nm,mine,16,0.4,abc\n", r"acc.csv:2: num_classes 'abc' must be a whole number"),
    (HEADER + "m,mine,hr,0.5,0\nm,mine,16,0.4,0\n", r"acc.csv:2: num_classes '0' must be a whole number of at least 2"),
    (HEADER + "m,mine,hr,0.5,-3\nm,mine,16,0.4,-3\n", r"acc.csv:2: num_classes '-3'"),
    (HEADER + "m,mine,hr,0.5,4\nm,mine,16,0.4,5\n", r"acc.csv:3: dataset mine has num_classes 5 here but 4 on line 2"),
    (HEADER.encode() + "m,caf\u00e9,hr,0.5,4\n".encode("latin-1"), r"acc.csv:2: accuracy table is not UTF-8 text \(byte 0xe9\)"),
    (HEADER + "m,mine,hr,0.5,4\nm,mine,16\n", r"acc.csv:3: 3 values for the 5 columns model,dataset,resolution,top1,num_classes"),
    (HEADER + "m,mine,hr,0.5,4,extra\n", r"acc.csv:2: 6 values for the 5 columns"),
    (HEADER + "m,mine,16,0.5,4\nm,mine,32,0.6,4\nm,other,hr,0.5,4\n",
     r"acc.csv: model m, dataset mine has no 'hr' row \(lines 2, 3\).*add a row with resolution hr"),
    (HEADER + "m,mine,hr,0.5,4\n", r"has only 'hr' rows"),
    (HEADER, r"acc.csv has a header but no data rows"),
    ("# only a comment\n\n", r"acc.csv is empty"),
    (HEADER + ",mine,hr,0.5,4\n", r"acc.csv:2: empty model"),
    (HEADER + "m,mine,hr,inf,4\n", r"acc.csv:2: top1 'inf' is not a finite number"),
], ids=["classes_abc", "classes_0", "classes_negative", "classes_conflict", "latin1", "short_row", "long_row",
        "no_hr", "only_hr", "no_rows", "empty", "empty_model", "inf"])
def test_metrics_bad_table_one_line(tmp_path, capsys, content, match):
    f = tmp_path / "acc.csv"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["metrics", "--accuracies", str(f)]) == 2
    assert re.search(match, _one_error_line(capsys))


@pytest.mark.parametrize("weights,match", [
    ('[["eurosat", 1.0]]', r"holds a JSON list; expected a JSON object mapping dataset -> weight"),
    ('{"eurosat": "heavy"}', r"weight of 'eurosat' is \"heavy\"; each weight must be a number >= 0"),
    ('{"eurosat": true}', r"weight of 'eurosat' is true"),
    ('{"eurosat": null}', r"weight of 'eurosat' is null"),
    ('{"eurosat": -1}', r"weight of 'eurosat' is -1"),
    ('{"eurosat": NaN}', r"weight of 'eurosat' is NaN"),
    ('{"eurosat": 1.0', r"is not valid JSON"),
], ids=["list", "string", "bool", "null", "negative", "nan", "broken_json"])
def test_metrics_bad_weights_one_line(tmp_path, capsys, weights, match):
    table = tmp_path / "acc.csv"
    table.write_text(HEADER + "m,eurosat,hr,0.5,\nm,eurosat,16,0.4,\n")
    w = tmp_path / "w.json"
    w.write_text(weights)
    assert main(["metrics", "--accuracies", str(table), "--weights", str(w)]) == 2
    assert re.search(match, _one_error_line(capsys))


@pytest.mark.parametrize("option", ["--accuracies", "--weights"])
@pytest.mark.parametrize("kind,match", [("folder", "is a folder"), ("pipe", "is not a regular file"),
                                        ("missing", "does not exist")])
def test_metrics_file_options_given_something_else_are_one_line(tmp_path, capsys, option, kind, match):
    """A folder, a named pipe (reading it would wait forever) or nothing: one line saying a file
    is expected."""
    table = tmp_path / "acc.csv"
    table.write_text(HEADER + "m,eurosat,hr,0.5,\nm,eurosat,16,0.4,\n")
    given = tmp_path / "given"
    if kind == "folder":
        given.mkdir()
    elif kind == "pipe":
        os.mkfifo(given)
    argv = ["--accuracies", str(given)] if option == "--accuracies" else \
        ["--accuracies", str(table), "--weights", str(given)]
    assert main(["metrics", *argv]) == 2
    line = _one_error_line(capsys)
    assert f"{option} {given} {match}; give a {'CSV' if option == '--accuracies' else 'JSON'} file" in line


def test_metrics_table_with_bom_and_crlf_reads(tmp_path, capsys):
    """Spreadsheet exports (UTF-8 BOM, CRLF) are ordinary tables, not errors."""
    f = tmp_path / "acc.csv"
    f.write_bytes(b"\xef\xbb\xbf" + (HEADER + "m,mine,hr,0.8,4\nm,mine,16,0.4,4\n").replace("\n", "\r\n").encode())
    assert main(["metrics", "--accuracies", str(f), "--json"]) == 0
    assert '"mine": 0.5' in capsys.readouterr().out


# ---- CSV datasets (path,label) ----------------------------------------------------------------

def _csv(tmp_path, rows: str, name="list.csv"):
    f = tmp_path / name
    f.write_text("path,label\n" + rows)
    return f


def test_csv_labels_by_index_and_by_name(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    by_index = build_csv(_csv(tmp_path, "a.png,2\nb.png,0\nc.png,1\n"), classnames=names)
    assert by_index.spec.classnames == ("cat", "dog", "bird")
    assert [by_index.label(i) for i in range(3)] == [2, 0, 1]
    # name labels with --classnames follow the file's order, not sorted order
    by_name = build_csv(_csv(tmp_path, "a.png,bird\nb.png,cat\nc.png,dog\n"), classnames=names)
    assert [by_name.label(i) for i in range(3)] == [2, 0, 1]
    assert by_name.samples[0][0] == str(tmp_path / "a.png")


@pytest.mark.parametrize("rows,classnames,match", [
    ("a.png,cat\nb.png,1\n", None, r"list.csv mixes class indices \(line 3: '1'\) and class names \(line 2: 'cat'\)"),
    ("a.png,cat\nb.png,\n", None, r"list.csv:3: empty label"),
    ("a.png,cat\n,dog\n", None, r"list.csv:3: empty path"),
    ("a.png,cat\nb.png\n", None, r"list.csv:3: 1 values for the 2 columns path,label"),
    ("a.png,cat\nb.png,dgo\n", ["cat", "dog"], r"list.csv:3: label 'dgo' is not one of the 2 class names .*did you mean 'dog'"),
    ("a.png,0\nb.png,2\n", ["cat", "dog"], r"list.csv:3: label 2 is not a class index 0..1 \(2 class names given\)"),
    ("a.png,0\nb.png,1\n", None, r"numeric labels: give --classnames"),
    ("", None, r"list.csv lists no images"),
], ids=["mixed", "empty_label", "empty_path", "short_row", "unknown_name", "index_out_of_range", "indices_no_names",
        "no_rows"])
def test_csv_dataset_bad_labels_one_line(tmp_path, rows, classnames, match):
    with pytest.raises(DatasetError) as e:
        build_csv(_csv(tmp_path, rows), classnames=classnames)
    assert len(str(e.value).splitlines()) == 1 and re.search(match, str(e.value)), str(e.value)


def test_csv_dataset_latin1_file_one_line(tmp_path):
    f = tmp_path / "list.csv"
    f.write_bytes("path,label\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"list.csv:2: CSV dataset is not UTF-8 text \(byte 0xe9\)"):
        build_csv(f)


def test_csv_dataset_bad_label_through_cli(tmp_path, capsys):
    f = _csv(tmp_path, "a.png,cat\nb.png,1\n")
    assert main(["--out", str(tmp_path / "out"), "eval", "--dataset", "csv", "--data-root", str(f),
                 "--no-progress"]) == 2
    assert "mixes class indices" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json*"))


# ---- image modes ------------------------------------------------------------------------------

def _png_bytes(image: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **params)
    return buf.getvalue()


def _gradient16() -> np.ndarray:
    """A 16-bit horizontal gradient over the whole range (0 .. 65535)."""
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (8, 1))


def test_16bit_png_scales_to_8bit_not_white(tmp_path):
    arr = _gradient16()
    image = Image.fromarray(arr)  # mode I;16 (Pillow picks it for uint16)
    assert image.mode == "I;16"
    path = tmp_path / "g16.png"
    path.write_bytes(_png_bytes(image))
    with Image.open(path) as raw:
        assert raw.mode in ("I", "I;16")  # what Pillow reads 16-bit PNGs as, depending on version
    for decoded in (open_image_file(path), bytes_loader(path.read_bytes())):
        assert decoded.mode == "L"  # scaled to 8 bits on decode; RGB is the protocol's first step
        decoded = composite_on_white(decoded)
        out = np.asarray(decoded).astype(int)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
        # the rule: the high byte, value >> 8
        assert np.abs(out[..., 0] - (arr >> 8)).max() <= 1
        assert out.min() == 0 and out.max() == 255 and 120 <= out.mean() <= 135  # a gradient, not all white


@pytest.mark.parametrize("mode,dtype", [("I", "<i4"), ("I;16B", ">u2"), ("I;16L", "<u2"), ("I;16N", "=u2")])
def test_wide_integer_modes_scale_like_16bit(mode, dtype):
    arr = _gradient16()
    image = Image.frombytes(mode, arr.shape[::-1], arr.astype(dtype).tobytes())
    out = np.asarray(composite_on_white(image)).astype(int)[..., 0]
    assert np.abs(out - (arr >> 8)).max() <= 1


def test_12bit_pgm_uses_its_own_depth():
    """A PGM with maxval 4095 (12-bit): Pillow rescales it to 16 bits, so the result is ~ value >> 4."""
    values = np.array([[0, 1000, 2048, 4095]], dtype=np.uint16)
    out = np.asarray(composite_on_white(bytes_loader(b"P5\n4 1\n4095\n" + values.astype(">u2").tobytes())))
    out = out.astype(int)[0, :, 0]
    assert np.abs(out - values.astype(float) * 255 / 4095).max() <= 1


def test_float_images_scale_or_clip():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))  # within [0, 1]: x 255
    assert np.asarray(composite_on_white(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-5.0, 0.5, 100.4, 300.0, np.nan]], dtype=np.float32))  # clipped to [0, 255]
    assert np.asarray(composite_on_white(wide))[0, :, 0].tolist() == [0, 0, 100, 255, 0]


@pytest.mark.parametrize("image,expected", [
    (Image.new("CMYK", (2, 2), (0, 255, 255, 0)), (255, 0, 0)),
    (Image.new("CMYK", (2, 2), (128, 0, 0, 128)), (63, 127, 127)),  # (1 - C)(1 - K): 255 * 127/255 * 127/255
    (Image.new("YCbCr", (2, 2), (128, 128, 128)), (128, 128, 128)),
    (Image.new("1", (2, 2), 1), (255, 255, 255)),
    (Image.new("1", (2, 2), 0), (0, 0, 0)),
    (Image.new("LA", (2, 2), (0, 0)), (255, 255, 255)),  # fully transparent black -> white
    (Image.new("LA", (2, 2), (0, 255)), (0, 0, 0)),
    (Image.new("RGBA", (2, 2), (255, 0, 0, 128)), (255, 127, 127)),
], ids=["cmyk_red", "cmyk_mixed", "ycbcr_grey", "1bit_white", "1bit_black", "la_clear", "la_opaque", "rgba_half"])
def test_modes_to_rgb(image, expected):
    out = composite_on_white(image)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == expected


def test_png_transparency_keys_composite_on_white():
    """P, L and RGB PNGs with a tRNS colour key: the keyed colour becomes white, others stay."""
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    for image, key in ((palette, 0), (Image.new("L", (2, 1), 7), 7), (Image.new("RGB", (2, 1), (10, 20, 30)), (10, 20, 30))):
        if image.mode != "P":
            image.putpixel((1, 0), 9 if image.mode == "L" else (200, 100, 50))
        decoded = composite_on_white(bytes_loader(_png_bytes(image, transparency=key)))
        assert decoded.getpixel((0, 0)) == (255, 255, 255)
        assert decoded.getpixel((1, 0)) == ((9, 9, 9) if image.mode == "L" else (200, 100, 50))


# ---- bounded work and data checked before the model ------------------------------------------

UNAVAILABLE_MODEL = "open_clip:ViT-B-32:laion2b_s34b_b79k"  # building it fails: a check that passes it ran first


@pytest.mark.parametrize("extra,match", [
    (["--resolutions", "16,99999"], r"resolution 99999 px is above the largest lr0fm makes \(16384 px"),
    (["--input-size", "100000"], r"input size 100000 px is above the largest lr0fm makes views at \(4096 px\)"),
], ids=["resolution", "input_size"])
def test_huge_resolutions_and_input_sizes_refused_before_any_model(extra, match, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--out", str(out), "eval", "--model", UNAVAILABLE_MODEL, "--dataset", "imagefolder",
                 "--data-root", str(image_folder)] + extra)
    err = _one_error_line(capsys)
    assert code == 2 and re.search(match, err), err
    assert not out.exists() or not any(out.rglob("*.json"))


@pytest.mark.parametrize("extra,match", [
    (["--resolutions", "16,257"], r"resolution 257 px is more than 4x the model's input size 64 px; "
                                  r"give resolutions up to 256 px"),
    (["--resolutions", "16,64", "--hr-via", "257"], r"--hr-via 257 px is more than 4x the model's input size 64 px"),
], ids=["native", "hr_via"])
def test_resolution_above_4x_the_input_size_refused_before_any_image(extra, match, tiny_open_clip, image_folder,
                                                                     tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--out", str(out), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder",
                 "--data-root", str(image_folder), "--workers", "0", "--no-progress"] + extra)
    err = _one_error_line(capsys)
    assert code == 2 and re.search(match, err), err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))  # no classifier, no record


def test_protocol_bounds():
    from lr0fm.protocol import Protocol, ProtocolError, parse_resolutions
    p = Protocol(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, resolutions=(16, 896, "hr"))
    assert p.check_bounds() is p
    with pytest.raises(ProtocolError, match="897 px is more than 4x"):
        p.check_bounds([16, 897])
    assert parse_resolutions("16384,hr") == [16384, "hr"]
    with pytest.raises(ProtocolError, match="16385 px is above"):
        parse_resolutions([16385])
    with pytest.raises(ProtocolError, match="4097 px is above"):
        Protocol(input_size=4097, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_folder_without_images_one_line_before_any_model(tmp_path, capsys):
    root = tmp_path / "folder"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        (root / c / "notes.txt").write_text("not an image")
    code = main(["--out", str(tmp_path / "out"), "eval", "--model", UNAVAILABLE_MODEL, "--dataset", "imagefolder",
                 "--data-root", str(root)])
    err = _one_error_line(capsys)
    assert code == 2 and "folder hold no image files" in err, err


def test_folder_of_unreadable_images_one_line_and_no_classifier_cached(tiny_open_clip, tmp_path, capsys, monkeypatch):
    import lr0fm.models

    built = []
    real = lr0fm.models.create_model
    monkeypatch.setattr(lr0fm.models, "create_model", lambda *a, **k: built.append(a) or real(*a, **k))
    root = tmp_path / "folder"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            (root / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut short")
    out = tmp_path / "out"
    code = main(["--out", str(out), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder",
                 "--data-root", str(root), "--workers", "0", "--no-progress", "--resolutions", "16"])
    err = _one_error_line(capsys)
    assert code == 2 and "none of the 4 images of folder could be read (first: 'cat/0.png')" in err, err
    assert not list(out.glob("cache/**/*.pt")) and not list(out.rglob("*.json")), sorted(out.rglob("*"))
    assert not built  # the data is checked before any model is built


# ---- webdataset shards ------------------------------------------------------------------------

def _wds_shard(root, n=6):
    """A CLIP_benchmark webdataset folder with one shard of n PNG samples; returns the shard."""
    import tarfile
    (root / "test").mkdir(parents=True)
    (root / "classnames.txt").write_text("cat\ndog\n")
    (root / "test" / "nshards.txt").write_text("1\n")
    rng = np.random.default_rng(0)
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for i in range(n):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(png, format="PNG")
            for ext, payload in (("png", png.getvalue()), ("cls", str(i % 2).encode())):
                info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return root / "test" / "0.tar"


def test_wds_shard_cut_at_a_member_boundary_is_an_error(tmp_path, capsys):
    import tarfile
    from lr0fm.datasets import get_dataset

    shard = _wds_shard(tmp_path / "wds")
    assert len(get_dataset(f"wds:{tmp_path / 'wds'}")) == 6
    with tarfile.open(shard) as tar:
        cut = tar.getmember("s0000004.png").offset  # the header of the 5th sample
    shard.write_bytes(shard.read_bytes()[:cut])
    with tarfile.open(shard) as tar:  # what tarfile alone sees: a whole tar of 4 samples
        assert len(tar.getnames()) == 8
    with pytest.raises(DatasetError, match=r"0.tar is truncated: it ends after 4 samples without the tar "
                                           r"end-of-archive blocks"):
        get_dataset(f"wds:{tmp_path / 'wds'}")
    code = main(["--out", str(tmp_path / "out"), "eval", "--model", UNAVAILABLE_MODEL,
                 "--dataset", f"wds:{tmp_path / 'wds'}"])
    assert code == 2 and "ends after 4 samples" in _one_error_line(capsys)
    # one zero block of the two is still cut short
    shard.write_bytes(shard.read_bytes() + bytes(512))
    with pytest.raises(DatasetError, match="ends after 4 samples"):
        get_dataset(f"wds:{tmp_path / 'wds'}")
    shard.write_bytes(shard.read_bytes() + bytes(512 + 8192))  # both, and a record's padding
    assert len(get_dataset(f"wds:{tmp_path / 'wds'}")) == 4


# ---- the Python API -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad,match", [
    ({"dataset": 123}, r"evaluate\(\) argument 'dataset' must be a dataset key or data from lr0fm.get_dataset, not int"),
    ({"model": 3.5}, r"argument 'model' must be a model name or a model from lr0fm.create_model, not float"),
    ({"resolutions": 16}, r"argument 'resolutions' must be '16,32,hr' or a list of pixels and 'hr', not int"),
    ({"resolutions": [16, 32.0]}, r"resolutions must be pixels \(int\) and 'hr', not float 32.0"),
    ({"out": 5}, r"argument 'out' must be a folder path, not int"),
    ({"limit": "10"}, r"argument 'limit' must be a whole number, not str '10'"),
    ({"batch_size": 8.0}, r"argument 'batch_size' must be a whole number, not float"),
    ({"workers": True}, r"argument 'workers' must be a whole number, not bool"),
    ({"checkpoint_every": "5"}, r"argument 'checkpoint_every'"),
    ({"progress": "no"}, r"argument 'progress' must be True or False"),
    ({"device": 0}, r"argument 'device' must be a device"),
    ({"amp": 16}, r"argument 'amp'"),
    ({"protocol": None}, r"argument 'protocol' must be a protocol name, not NoneType"),
    ({"resize_mode": 1}, r"argument 'resize_mode'"),
    ({"input_size": 224.0}, r"argument 'input_size' must be a whole number of pixels"),
    ({"interpolation": 3}, r"argument 'interpolation'"),
    ({"lr_tokens": 1}, r"argument 'lr_tokens' must be a file path"),
    ({"sr": 2}, r"argument 'sr'"),
    ({"views": 1}, r"argument 'views'"),
    ({"decoder": 1}, r"argument 'decoder'"),
    ({"trust_checkpoint": "yes"}, r"argument 'trust_checkpoint' must be True or False"),
])
def test_api_evaluate_wrong_kinds_are_type_errors(bad, match, tiny_open_clip, image_folder, tmp_path, monkeypatch):
    import lr0fm
    import lr0fm.models

    built = []
    monkeypatch.setattr(lr0fm.models, "create_model", lambda *a, **k: built.append(a))
    arguments = {"model": tiny_open_clip[0], "dataset": "imagefolder", "resolutions": [16],
                 "out": tmp_path / "out", **bad}
    with pytest.raises(TypeError, match=match):
        lr0fm.evaluate(**arguments)
    assert not built and not (tmp_path / "out").exists()


def test_api_evaluate_bad_values_are_value_errors(tiny_open_clip, tmp_path):
    import lr0fm
    with pytest.raises(ValueError, match="input size 5000 px is above"):
        lr0fm.evaluate(tiny_open_clip[0], "imagefolder", [16], out=tmp_path / "out", input_size=5000)
    with pytest.raises(ValueError, match="resolution 20000 px is above"):
        lr0fm.evaluate(tiny_open_clip[0], "imagefolder", [16, 20000], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
