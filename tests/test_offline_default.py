"""The offline default: TuxPaint / Fashion-MNIST datasets from Debian packages and the ConSE model."""
from pathlib import Path

import numpy as np
import pytest

from lr0fm.datasets import get_dataset
from lr0fm.datasets.generic import build_csv

TUX = Path("/usr/share/tuxpaint/stamps")
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not TUX.is_dir(), reason="Debian tuxpaint-stamps-default not installed (make test installs it)")
def test_tuxpaint_categories():
    data = get_dataset("tuxpaint")
    assert data.spec.num_classes == 11 and data.spec.classnames[0] == "mammal"
    assert 200 <= len(data) <= 260
    assert not any("cartoon" in data.sample_id(i).split("/") for i in range(len(data)))
    counts = np.bincount([data.label(i) for i in range(len(data))], minlength=11)
    assert (counts > 0).all()
    bird = data.spec.classnames.index("bird")
    assert all(data.sample_id(i).startswith("animals/birds/") for i in range(len(data)) if data.label(i) == bird)
    img = data.load_image(0)
    assert img.mode == "RGBA"  # decoded as is; the protocol composites the alpha on white
    from lr0fm.protocol import Protocol
    from lr0fm.images import composite_on_white
    protocol = Protocol(input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    on_white = composite_on_white(img)
    transparent = np.asarray(img.getchannel("A")) == 0
    assert on_white.mode == "RGB" and transparent.any() and (np.asarray(on_white)[transparent] == 255).all()
    assert np.array_equal(np.asarray(protocol.view(img, 16)), np.asarray(protocol.view(on_white, 16)))


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_test_split():
    data = get_dataset("fashion_mnist")
    assert len(data) == 10000 and data.spec.num_classes == 10
    assert np.bincount([data.label(i) for i in range(len(data))]).tolist() == [1000] * 10
    img = data.load_image(0)
    assert img.size == (28, 28) and img.mode == "RGB"


def test_csv_dataset(image_folder, tmp_path):
    rows = ["path,label"] + [f"{p.relative_to(image_folder)},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
    (image_folder / "list.csv").write_text("\n".join(rows) + "\n")
    data = build_csv(image_folder / "list.csv")
    assert data.spec.classnames == ("cat", "dog", "red_car") and len(data) == 12
    # every sample carries its own folder's class, by path
    assert [data.spec.classnames[data.label(i)] for i in range(len(data))] == \
        [p.parent.name for p in sorted(image_folder.rglob("*.png"))]
    assert [data.label(i) for i in range(len(data))] == [0] * 4 + [1] * 4 + [2] * 4
    assert data.load_image(0).size[0] > 0


@pytest.mark.slow
@pytest.mark.skipif(not TUX.is_dir(), reason="Debian tuxpaint-stamps-default not installed")
def test_default_model_on_tuxpaint_end_to_end(tmp_path, capsys):
    """The README's default: real EfficientNet-Lite0 + MiniLM weights; accuracy falls with resolution."""
    from lr0fm.cli import main
    from lr0fm.store import ResultsStore
    assert main(["--out", str(tmp_path), "eval", "--dataset", "tuxpaint", "--no-progress"]) == 0
    acc = {r["resolution"]: r["top1"] for r in ResultsStore(tmp_path).records()}
    # measured beforehand by the author: 63.5 / 61.7 / 57.8 / 54.8 / 42.6 % (chance 9 %)
    assert 0.55 <= acc["hr"] <= 0.75
    assert acc[16] < acc[32] < acc["hr"] and acc[16] < acc[64] <= acc["hr"]
    assert acc[16] > 0.25  # far above chance even at 16 px
