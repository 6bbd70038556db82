"""One evaluation identity: every part that can change a number gives a new cell; what cannot
(data root path, workers, batch size, device index, display name) keeps it."""
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from lr0fm import identity
from lr0fm.datasets import get_dataset
from lr0fm.errors import InputError
from lr0fm.evaluation import EvalConfig, evaluate, plan
from lr0fm.models import create_model
from lr0fm.store import ResultsStore

from conftest import make_image
from test_cli import fake_minilm  # noqa: F401  (fixture: ConSE with a fast stand-in for MiniLM)


@pytest.fixture(scope="module")
def tiny_model(tiny_open_clip):
    return create_model(tiny_open_clip[0])


def cells_of(model, data, **cfg):
    cfg = EvalConfig(**{"resolutions": (16, "hr"), "workers": 0, "progress": False, **cfg})
    p = plan(model, data, cfg)
    ev, cells = p.evaluation, p.cells
    return ev, cells


def test_one_digest_length_for_every_id(tiny_model, image_folder):
    ev, cells = cells_of(tiny_model, get_dataset("imagefolder", root=image_folder))
    ids = [ev.id, ev.classifier_key, *cells.values(), identity.tensors_digest({"t": torch.ones(2)})]
    assert {len(i) for i in ids} == {identity.DIGEST_CHARS}
    assert ev.resume_key([16]).startswith(ev.id + "-")
    assert len(set(cells.values())) == 2


def test_each_part_changes_the_cell(tiny_model, tiny_open_clip, image_folder, tmp_path):
    data = get_dataset("imagefolder", root=image_folder)
    base, base_cells = cells_of(tiny_model, data)
    changed = {}
    # data: content of one image (same file name), class names, templates, options
    other = tmp_path / "other"
    shutil.copytree(image_folder, other)
    make_image(np.random.default_rng(9), (40, 30)).save(other / "cat" / "0.png")
    changed["content"] = cells_of(tiny_model, get_dataset("imagefolder", root=other))
    changed["classnames"] = cells_of(tiny_model, get_dataset("imagefolder", root=image_folder,
                                                             classnames=["a cat", "a dog", "a car"]))
    changed["templates"] = cells_of(tiny_model, get_dataset("imagefolder", root=image_folder, templates=["{}"]))
    optioned = get_dataset("imagefolder", root=image_folder)
    optioned.spec = replace(optioned.spec, options={"seed": 1})
    changed["options"] = cells_of(tiny_model, optioned)
    # numerics, limit, variant, top-k
    changed["amp"] = cells_of(tiny_model, data, amp="bf16")
    changed["limit"] = cells_of(tiny_model, data, limit=5)
    changed["variant"] = cells_of(tiny_model, data, variant={"sr": "bicubic"})
    changed["topk"] = cells_of(tiny_model, data, topk=1)
    # protocol
    squash = replace(tiny_model.preprocess, mode="squash")
    m2 = create_model(tiny_open_clip[0])
    m2.preprocess = squash
    changed["protocol"] = cells_of(m2, data)
    # model: other weights in another file, other backend kwargs, other text config
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in tiny_model.model.state_dict().items()}
    ckpt = tmp_path / "other.pt"
    torch.save(state, ckpt)
    arch_cfg = tiny_open_clip[1]
    changed["weights"] = cells_of(create_model(f"open_clip:{arch_cfg}:{ckpt}"), data)
    m3 = create_model(tiny_open_clip[0])
    m3.info.kwargs = {"precision": "bf16"}
    changed["kwargs"] = cells_of(m3, data)
    m4 = create_model(tiny_open_clip[0])
    m4.text_cfg = replace(m4.text_cfg, lowercase=True)
    changed["text"] = cells_of(m4, data)
    for part, (ev, cells) in changed.items():
        assert ev.id != base.id, part
        assert set(cells.values()).isdisjoint(base_cells.values()), part
    # the classifier depends on the model and prompts only
    assert changed["limit"][0].classifier_key == base.classifier_key
    assert changed["amp"][0].classifier_key == base.classifier_key
    assert changed["templates"][0].classifier_key != base.classifier_key
    assert changed["weights"][0].classifier_key != base.classifier_key


def test_what_cannot_change_a_number_keeps_the_cell(tiny_model, image_folder, tmp_path):
    data = get_dataset("imagefolder", root=image_folder)
    base, cells = cells_of(tiny_model, data)
    moved = tmp_path / "elsewhere" / image_folder.name
    shutil.copytree(image_folder, moved)  # copied: new paths and new mtimes, same content
    assert cells_of(tiny_model, get_dataset("imagefolder", root=moved))[1] == cells
    assert cells_of(tiny_model, data, workers=3, batch_size=7, device="cpu:0", checkpoint_every=5)[1] == cells
    # a display name (--name, or the folder's stem) labels rows; the numbers are the same
    assert data.spec.name == image_folder.name
    renamed = get_dataset("imagefolder", root=image_folder, name="pets")
    assert renamed.spec.label == "pets" and cells_of(tiny_model, renamed)[1] == cells
    assert "name" not in identity.data_part(renamed)


def test_same_names_and_counts_other_images_is_evaluated_again(tiny_model, image_folder, tmp_path):
    """Two folders with the same class names, file names and counts but other pixels: the second
    eval computes its own numbers instead of printing the first one's."""
    store = ResultsStore(tmp_path / "res")
    cfg = EvalConfig(resolutions=(16, "hr"), workers=0, progress=False)
    first = evaluate(tiny_model, get_dataset("imagefolder", root=image_folder), cfg, store)
    other = tmp_path / "b" / image_folder.name
    shutil.copytree(image_folder, other)
    rng = np.random.default_rng(42)
    for path in sorted(other.rglob("*.png")):
        make_image(rng, (44, 33)).save(path)
    second = evaluate(tiny_model, get_dataset("imagefolder", root=other), cfg, store)
    assert [r["cell"] for r in first] != [r["cell"] for r in second]
    assert len(store.records()) == 4
    p1 = store.load_predictions(first[1]["cell"])["topk"]
    p2 = store.load_predictions(second[1]["cell"])["topk"]
    assert not np.array_equal(p1, p2)


def test_differences_name_what_differs():
    a = {"model": {"id": "m"}, "numerics": {"amp": "fp32"}, "limit": None, "data": {"n": 12, "samples": "a" * 32}}
    b = {"model": {"id": "m"}, "numerics": {"amp": "fp32"}, "limit": 6, "data": {"n": 6, "samples": "b" * 32}}
    c = {"model": {"id": "m"}, "numerics": {"amp": "bf16"}, "limit": None, "data": {"n": 12, "samples": "a" * 32}}
    assert identity.differences([a, b]) == ["limit=all", "limit=6"]
    assert identity.differences([a, c]) == ["amp=fp32", "amp=bf16"]
    assert identity.differences([a]) == [""]


# -- one weights digest, made by identity's constructors ---------------------------------------
def test_digests_is_a_leaf_and_identity_imports_no_model():
    """lr0fm.digests imports neither torch nor another lr0fm module; lr0fm.identity no model."""
    import subprocess
    import sys
    code = ("import sys, lr0fm.identity; "
            "print(sorted(m for m in sys.modules if m.startswith(('torch', 'lr0fm'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['lr0fm', 'lr0fm.digests', 'lr0fm.identity', 'lr0fm.version']"


def test_one_weights_digest_for_results_and_token_checkpoints(tiny_open_clip, image_folder):
    """A model without a weights file: its records and its LR-token checkpoints are tied to the
    same digest of its state dict, kept under one key that lr0fm.evaluate drops for a model whose
    weights changed in place."""
    from lr0fm.tokens.checkpoint import check_matches
    _, cfg, _ = tiny_open_clip
    model = create_model(f"open_clip:{cfg}:random")
    assert model.info.weights_hash is None
    weights = identity.weights_digest(model)
    assert weights == identity.weights_from_state(model) and weights.startswith("state:")
    assert identity.model_part(model)["weights"] == weights
    check_matches({"model_id": model.info.model_id, "weights_hash": weights}, model, "ckpt")
    with torch.no_grad():
        model.model.text_projection.add_(1.0)  # the text side is the model's too
    assert identity.weights_from_state(model) != weights
    model.info.extra.pop(identity.STATE_DIGEST_KEY)  # what lr0fm.evaluate does for a model object
    assert identity.weights_digest(model) == identity.weights_from_state(model) != weights
    with pytest.raises(InputError, match="other weights"):
        check_matches({"model_id": model.info.model_id, "weights_hash": weights}, model, "ckpt")
    assert [k for k in model.info.extra if k.startswith("_")] == [identity.STATE_DIGEST_KEY]  # one cached digest


def test_folder_digest_follows_content_not_place(tmp_path):
    from lr0fm.digests import folder_digest
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "w.bin").write_bytes(b"weights")
    (a / "sub" / "vocab.txt").write_text("x y")
    first = folder_digest(a)
    assert len(first) == identity.DIGEST_CHARS
    a.rename(tmp_path / "b")
    assert folder_digest(tmp_path / "b") == first
    (tmp_path / "b" / "sub" / "vocab.txt").write_text("x z")  # a file in a subfolder counts
    assert folder_digest(tmp_path / "b") != first
    assert identity.weights_from_folder(tmp_path / "b") == "sha256:" + folder_digest(tmp_path / "b")


def test_conse_labels_and_templates_are_in_its_identity(fake_minilm, monkeypatch):  # noqa: F811  (the fixture)
    """ConSE's image side is the ImageNet label embeddings (labels x templates): other labels or
    templates give other weights, hence other cells and another classifier key."""
    conse = fake_minilm
    base = identity.model_part(conse.ConSEModel("conse-effnet-lite0"))["weights"]
    assert base.count("+labels:") == 1
    original = conse.LABEL_TEMPLATES
    monkeypatch.setattr(conse, "LABEL_TEMPLATES", original[:2])
    templates = identity.model_part(conse.ConSEModel("conse-effnet-lite0"))["weights"]
    monkeypatch.setattr(conse, "LABEL_TEMPLATES", original)
    monkeypatch.setattr(conse, "IMAGENET_LABELS", "datasets/data/tuxpaint/classnames.txt")
    labels = conse.ConSEModel("conse-effnet-lite0")
    assert labels.label_embeddings.shape[0] == 11
    assert len({base, templates, identity.model_part(labels)["weights"]}) == 3
    assert {w.split("+labels:")[0] for w in (base, templates)} == {base.split("+labels:")[0]}


# Ids of three protocols, computed with the code before Protocol.describe() left later fields out
# at their defaults (every field was described then): stored records must keep these ids.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PINNED_PROTOCOLS = {
    "native": (dict(input_size=224, mean=CLIP_MEAN, std=CLIP_STD),
               "7ac2ba14b648af0766196d5f959697d0", "af15dda1e7d398bb8f7b7d067d3f66f0",
               "d8f5870274fd7470401a496df09d7c93"),
    "paper": (dict(input_size=384, mean=(0.5,) * 3, std=(0.5,) * 3, mode="squash", interpolation="bilinear",
                   source="paper", rgb_last=True, hr_via=224),
              "ccd4cdc7d3ff36bcb613b89a9f6450d2", "d4b9f84287ce175df659fbb3008eb3b9",
              "462d1926790bb69e7155ad8906a450dc"),
    "override": (dict(input_size=128, mean=CLIP_MEAN, std=CLIP_STD, interpolation="lanczos", source="native+override"),
                 "70c9d910abedd2bfdcc1e23640cff96d", "a6c1272b83ac9fb85379000e7a9d0b5c",
                 "e159dc7aa1eff036d78f904abfa2d1f8"),
}


def _evaluation(protocol) -> identity.Evaluation:
    return identity.Evaluation(
        model={"backend": "open_clip", "id": "ViT-B-32:openai", "weights": "abc", "kwargs": {}, "text": {}},
        data={"key": "tuxpaint", "split": "test", "options": {}, "n": 3, "samples": "s", "classnames": "c",
              "templates": "t", "num_classes": 2},
        protocol={**protocol.describe(), "decoder": "pil", "pillow": "11"}, numerics={"amp": None, "topk": 5},
        variant={}, limit=None)


@pytest.mark.parametrize("name", PINNED_PROTOCOLS)
def test_a_new_protocol_field_at_its_default_changes_no_stored_id(name):
    """Protocol.describe()'s rule: the fields stored records have are always described, a later
    field only where it differs from its default. So the ids computed before the rule are kept,
    a new knob (here a boolean and a text field, as a subclass adds them) at its default changes
    none, and the knob set makes another evaluation."""
    from dataclasses import field, make_dataclass

    from lr0fm.digests import digest
    from lr0fm.protocol import Protocol

    kwargs, protocol_id, evaluation_id, cell_16 = PINNED_PROTOCOLS[name]
    old = Protocol(**kwargs)
    assert digest(old.describe()) == protocol_id
    assert _evaluation(old).id == evaluation_id and _evaluation(old).cell(16) == cell_16
    Knobbed = make_dataclass("Knobbed", [("sharpen", bool, field(default=False)),
                                         ("matte", str, field(default="white"))], bases=(Protocol,), frozen=True)
    assert _evaluation(Knobbed(**kwargs)).id == evaluation_id
    assert Knobbed(**kwargs).describe() == old.describe()
    assert Protocol.from_description(old.describe()) == old  # a stored description remakes its protocol
    for knob in ({"sharpen": True}, {"matte": "black"}):
        changed = Knobbed(**kwargs, **knob)
        assert changed.describe() == {**old.describe(), **knob}
        assert _evaluation(changed).id != evaluation_id
        assert Knobbed.from_description(changed.describe()) == changed


def test_a_switch_left_at_its_default_is_no_override(tiny_model):
    """A protocol option at its default is not given: a False switch does not reach
    choose_protocol as an override, so it adds no '+override' to the source and no new id (the
    trap of passing every non-None value); set, it overrides its Protocol field."""
    from dataclasses import make_dataclass

    from lr0fm.models import choose_protocol
    from lr0fm.options import ProtocolChoice, option
    from lr0fm.protocol import Protocol

    Choice = make_dataclass("Choice", [("sharpen", bool, option(False, "sharpen views", "protocol", sets="sharpen"))],
                            bases=(ProtocolChoice,), frozen=True)
    Knobbed = make_dataclass("Knobbed", [("sharpen", bool, False)], bases=(Protocol,), frozen=True)
    assert Choice().given() == {"protocol": "native"} and Choice().overrides() == {}
    assert Choice(sharpen=True).overrides() == {"sharpen": True}
    assert Choice(hr_via=0).overrides() == {"hr_via": None}  # 0 is given: the HR view goes straight
    own = tiny_model.preprocess
    try:
        tiny_model.preprocess = Knobbed(**{f: getattr(own, f) for f in own.__dataclass_fields__})
        left = choose_protocol(tiny_model, Choice()).preprocess
        assert left.source == "native" and left.describe() == own.describe()
        switched = choose_protocol(tiny_model, Choice(sharpen=True)).preprocess
        assert switched.sharpen and switched.source == "native+override"
    finally:
        tiny_model.preprocess = own
