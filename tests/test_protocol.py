"""The LR protocol against a plain PIL/torchvision reference chain, within 1/255."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from lr0fm.protocol import HR, Protocol, ProtocolError, parse_resolutions

from conftest import make_image

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
BICUBIC = T.InterpolationMode.BICUBIC


def reference(image: Image.Image, r, S: int, mode: str) -> torch.Tensor:
    """The chain as the paper's code wrote it: torchvision transforms on PIL images."""
    steps = []
    if mode == "shortest":
        if r != HR:
            steps.append(T.Resize(r, interpolation=BICUBIC))
        steps += [T.Resize(S, interpolation=BICUBIC), T.CenterCrop(S)]
    else:
        if r != HR:
            steps.append(T.Resize((r, r), interpolation=BICUBIC))
        steps.append(T.Resize((S, S), interpolation=BICUBIC))
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)(image)


@pytest.mark.parametrize("mode", ["shortest", "squash"])
@pytest.mark.parametrize("size", [(300, 200), (123, 457), (64, 64), (37, 90)])
def test_views_match_pil_reference(mode, size):
    rng = np.random.default_rng(sum(size))
    image = make_image(rng, size, color=(250, 10, 120))
    S = 96
    protocol = Protocol(input_size=S, mean=MEAN, std=STD, mode=mode, resolutions=(16, 32, 64, 128, HR))
    views = protocol.views(image)
    assert views.shape == (5, 3, S, S)
    for view, r in zip(views, protocol.resolutions):
        ref = reference(image, r, S, mode).numpy()
        # compare in pixel units: undo the normalisation
        diff = np.abs((view - ref) * np.asarray(STD)[:, None, None]) * 255
        assert diff.max() <= 1.0, (mode, size, r, diff.max())


def test_uint8_views_normalised_on_device_match():
    rng = np.random.default_rng(1)
    image = make_image(rng, (200, 120))
    protocol = Protocol(input_size=64, mean=MEAN, std=STD)
    a = protocol.views(image)
    b = protocol.normalize_batch(torch.from_numpy(protocol.views_uint8(image))).numpy()
    assert np.array_equal(a, b)  # the same float32 operations, bit for bit


def test_lr_view_loses_detail_and_hr_keeps_it():
    rng = np.random.default_rng(2)
    image = make_image(rng, (256, 256))
    protocol = Protocol(input_size=128, mean=(0, 0, 0), std=(1, 1, 1), resolutions=(16, HR))
    lr, hr = protocol.views(image)
    # the HR view of a 256 px noise image keeps high-frequency energy; the 16 px view does not
    def energy(v):
        return np.abs(np.diff(v, axis=-1)).mean()

    assert energy(lr) < 0.3 * energy(hr)


def test_protocol_description_is_complete_and_independent_of_the_resolution_list():
    p = Protocol(input_size=224, mean=MEAN, std=STD, mode="squash")
    d = p.describe(32)
    assert d == {"input_size": 224, "mean": list(MEAN), "std": list(STD), "mode": "squash",
                 "interpolation": "bicubic", "antialias": True, "resolution": 32, "source": "native",
                 "rgb_last": False, "hr_via": None}
    assert p.describe() == Protocol(input_size=224, mean=MEAN, std=STD, mode="squash", resolutions=(16,)).describe()
    assert p.describe() != Protocol(input_size=224, mean=MEAN, std=STD, mode="shortest").describe()


def test_paper_quirks_convert_after_resizing_and_take_hr_through_224():
    """The authors resize the decoded image in its own mode and convert to RGB last (a palette
    image is resized nearest-neighbour by PIL), and for S != 224 their HR view is 224 -> S."""
    from PIL import Image
    rng = np.random.default_rng(1)
    pal = Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE)
    paper = Protocol(input_size=64, mean=MEAN, std=STD, mode="squash", rgb_last=True, hr_via=48, source="paper")
    native = Protocol(input_size=64, mean=MEAN, std=STD, mode="squash")
    authors = pal.resize((16, 16), Image.Resampling.BICUBIC).resize((64, 64), Image.Resampling.BICUBIC).convert("RGB")
    assert np.array_equal(np.asarray(paper.view(pal, 16)), np.asarray(authors))
    assert not np.array_equal(np.asarray(native.view(pal, 16)), np.asarray(authors))
    hr = pal.resize((48, 48), Image.Resampling.BICUBIC).resize((64, 64), Image.Resampling.BICUBIC).convert("RGB")
    assert np.array_equal(np.asarray(paper.view(pal, "hr")), np.asarray(hr))


@pytest.mark.parametrize("bad", ["0", "-16", "abc", "16,0", ""])
def test_bad_resolutions(bad):
    with pytest.raises(ProtocolError):
        parse_resolutions(bad)


def test_resolutions_parse():
    assert parse_resolutions("16, 32,HR,16") == [16, 32, "hr"]


def test_bad_mode():
    with pytest.raises(ProtocolError, match="resize mode"):
        Protocol(input_size=32, mean=MEAN, std=STD, mode="crop")
