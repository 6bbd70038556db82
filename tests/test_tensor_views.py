"""Tensor views (lr0fm.tensor_views) equal the PIL protocol chain bit for bit, on CPU tensors (and CUDA if present)."""
import numpy as np
import pytest
import torch
from PIL import Image

from lr0fm import tensor_views
from lr0fm.protocol import HR, Protocol

RESOLUTIONS = (16, 32, 64, 128, HR)
# tiny, thin, smaller than every r (the down step upsamples), already S px, one side S px
FIXED_SIZES = [(7, 3), (3, 7), (1, 1), (5, 40), (20, 12), (64, 64), (224, 224), (224, 301), (97, 64)]


def random_sizes(rng, n, longest=600):
    """(w, h) with aspect ratios log-uniform in 0.2..5 and sides up to ``longest``."""
    sizes = []
    for _ in range(n):
        aspect = float(np.exp(rng.uniform(np.log(0.2), np.log(5.0))))
        long_side = int(rng.integers(8, longest))
        w, h = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
        sizes.append((max(1, round(w)), max(1, round(h))))
    return sizes


def noise_image(rng, w, h):
    """Pixel noise with a saturated block: every rounding and the clipping of overshoots matter."""
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a[h // 4: 3 * h // 4 + 1, w // 3: 2 * w // 3 + 1] = (255, 0, 255)
    return a


def assert_views_equal_pil(protocol, arrays, device="cpu"):
    made = tensor_views.make_views(protocol, [torch.from_numpy(a) for a in arrays], device=device).cpu().numpy()
    for a, views in zip(arrays, made):
        expected = protocol.views_uint8(Image.fromarray(a))
        for j, r in enumerate(protocol.resolutions):
            diff = np.abs(views[j].astype(int) - expected[j]).max()
            assert diff == 0, (protocol.mode, protocol.interpolation, protocol.input_size, a.shape, r, diff)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_views_equal_pil_chain(mode, interpolation):
    rng = np.random.default_rng(["shortest", "squash"].index(mode) * 2 + (interpolation == "bilinear"))
    sizes = FIXED_SIZES + random_sizes(rng, 10)
    for S in (64, 224):
        protocol = Protocol(S, (0.5,) * 3, (0.5,) * 3, mode=mode, interpolation=interpolation,
                            resolutions=RESOLUTIONS)
        chosen = sizes[int(S == 224)::2]  # each size at one S: half the time, same coverage of sizes
        assert_views_equal_pil(protocol, [noise_image(rng, w, h) for w, h in chosen])


@pytest.mark.parametrize("interpolation", ["box", "lanczos", "nearest"])
def test_other_filters_equal_pil_chain(interpolation):
    rng = np.random.default_rng(7)
    for mode in ("shortest", "squash"):
        protocol = Protocol(96, (0.5,) * 3, (0.5,) * 3, mode=mode, interpolation=interpolation,
                            resolutions=(16, 48, 200, HR))
        sizes = [(7, 3), (37, 90)] + random_sizes(rng, 3, longest=400)
        assert_views_equal_pil(protocol, [noise_image(rng, w, h) for w, h in sizes])


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "box", "lanczos", "nearest"])
def test_coefficients_are_pillows_own(interpolation):
    """Read Pillow's fixed-point coefficients out of Pillow: resizing the width of a 32-bit image
    holding 2**22 * identity gives round(2**22 * k) (the 8-bit path's rounding) for every tap."""
    rng = np.random.default_rng(3)
    pairs = [(1, 1), (1, 5), (5, 1), (7, 3), (3, 7), (224, 224)]
    pairs += [tuple(int(v) for v in rng.integers(1, 700, 2)) for _ in range(25)]
    pil_filter = Protocol(8, (0,) * 3, (1,) * 3, interpolation=interpolation).pil_filter
    for n_in, n_out in pairs:
        impulses = Image.fromarray((np.eye(n_in) * 2 ** tensor_views.PRECISION_BITS).astype(np.int32))
        pillow = np.asarray(impulses.resize((n_out, n_in), pil_filter)).T
        ours = tensor_views.coefficients(n_in, n_out, interpolation)
        assert np.array_equal(ours, pillow), (interpolation, n_in, n_out)


def test_batches_group_sizes_and_keep_order():
    rng = np.random.default_rng(4)
    protocol = Protocol(48, (0.5,) * 3, (0.5,) * 3, resolutions=(16, HR))
    sizes = [(60, 40), (33, 70), (60, 40), (9, 9), (60, 40), (33, 70)]
    arrays = [noise_image(rng, w, h) for w, h in sizes]
    tensors = [torch.from_numpy(a) for a in arrays]
    together = tensor_views.make_views(protocol, tensors)
    assert together.shape == (6, 2, 48, 48, 3) and together.dtype == torch.uint8
    for i, t in enumerate(tensors):
        assert torch.equal(together[i], tensor_views.make_views(protocol, [t])[0])
    same_size = torch.stack([tensors[i] for i in (0, 2, 4)])  # a [B, H, W, 3] batch
    assert torch.equal(tensor_views.make_views(protocol, same_size), together[[0, 2, 4]])
    assert torch.equal(tensor_views.make_views(protocol, tensors, resolutions=[HR])[:, 0], together[:, 1])


def image_modes(rng, w=45, h=30):
    """One picture in the modes datasets hold, transparency included."""
    rgb = Image.fromarray(noise_image(rng, w, h))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
    keyed = rgb.convert("P")
    keyed.info["transparency"] = 3
    return [rgb, rgb.convert("L"), rgb.convert("1"), rgb.convert("P"), keyed, rgba, rgba.convert("LA"),
            rgb.convert("CMYK")]


@pytest.mark.parametrize("rgb_last", [False, True])
def test_original_carrier_feeds_exact_views_for_every_mode(rgb_last):
    """lr0fm converts to RGB first; the paper's order (rgb_last) resizes in the image's own mode,
    which the worker then finishes with PIL unless the mode is RGB or L."""
    rng = np.random.default_rng(5)
    protocol = Protocol(32, (0.5,) * 3, (0.5,) * 3, resolutions=(16, HR), rgb_last=rgb_last)
    carrier = tensor_views.OriginalCarrier(protocol)
    images = image_modes(rng)
    sent = [torch.from_numpy(carrier(im)) for im in images]
    originals = [t.shape == (30, 45, 3) for t in sent]
    assert all(originals) if not rgb_last else originals == [True, True] + [False] * 6
    made = tensor_views.make_views(protocol, sent).numpy()
    for image, views in zip(images, made):
        assert np.array_equal(views, protocol.views_uint8(image)), image.mode


@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_hr_view_through_hr_via(mode):
    rng = np.random.default_rng(8)
    protocol = Protocol(64, (0.5,) * 3, (0.5,) * 3, mode=mode, resolutions=(16, HR), hr_via=100)
    assert_views_equal_pil(protocol, [noise_image(rng, w, h) for w, h in [(150, 90), (40, 70)]])


def test_supports_every_protocol_filter_and_rejects_bad_input():
    for interpolation in ("bicubic", "bilinear", "box", "lanczos", "nearest"):
        assert tensor_views.supports(Protocol(32, (0.5,) * 3, (0.5,) * 3, interpolation=interpolation))
    protocol = Protocol(32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        tensor_views.make_views(protocol, [torch.zeros(10, 10, 3)])
    with pytest.raises(ValueError, match="uint8 RGB"):
        tensor_views.make_views(protocol, [torch.zeros(10, 10, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="finished views"):  # views for other resolutions
        tensor_views.make_views(protocol, [torch.zeros(2, 32, 32, 3, dtype=torch.uint8)], resolutions=[HR])
    with pytest.raises(ValueError, match="at least one"):
        tensor_views.make_views(protocol, [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["shortest", "squash"])
def test_cuda_views_equal_pil_chain(mode):
    rng = np.random.default_rng(6)
    for interpolation in ("bicubic", "bilinear", "lanczos"):
        protocol = Protocol(224, (0.5,) * 3, (0.5,) * 3, mode=mode, interpolation=interpolation,
                            resolutions=RESOLUTIONS)
        sizes = FIXED_SIZES + random_sizes(rng, 20, longest=1500)
        assert_views_equal_pil(protocol, [noise_image(rng, w, h) for w, h in sizes], device="cuda")
