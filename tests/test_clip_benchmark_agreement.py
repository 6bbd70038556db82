"""At HR lr0fm agrees with CLIP_benchmark's own zero-shot path (PyPI clip-benchmark 1.6.2:
``zero_shot_classifier`` + ``run_classification``) run on its own open_clip model, built from the
same checkpoint with open_clip.create_model_and_transforms as CLIP_benchmark does: text
classifiers within 1e-7 (measured: 6.0e-8) and the same per-image top-5, in order."""
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("clip_benchmark")
from clip_benchmark.metrics.zeroshot_classification import run_classification, zero_shot_classifier  # noqa: E402

from lr0fm.classifier import build_zero_shot_classifier  # noqa: E402
from lr0fm.datasets import get_dataset  # noqa: E402
from lr0fm.evaluation import EvalConfig, evaluate  # noqa: E402
from lr0fm.images import composite_on_white  # noqa: E402
from lr0fm.models import create_model  # noqa: E402
from lr0fm.store import ResultsStore  # noqa: E402

TUX = Path("/usr/share/tuxpaint/stamps")


class _Images(torch.utils.data.Dataset):
    """The same decoded images lr0fm reads, through open_clip's own eval transform."""

    def __init__(self, data, transform):
        self.data, self.transform = data, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.transform(composite_on_white(self.data.load_image(i))), self.data.label(i)


@pytest.mark.skipif(not TUX.is_dir(), reason="Debian tuxpaint-stamps-default not installed (make test installs it)")
def test_hr_predictions_and_classifier_agree_with_clip_benchmark(tiny_open_clip, tmp_path):
    import open_clip

    model = create_model(tiny_open_clip[0])
    data = get_dataset("tuxpaint").subset(range(0, 230, 3))  # 77 photos of all 11 classes, odd shapes
    classnames, templates = list(data.spec.classnames), list(data.spec.templates)

    # CLIP_benchmark's model: its own, as open_clip hands it out (trainable weights, eval mode),
    # loaded from the same checkpoint file, sharing no module with lr0fm's
    arch, checkpoint = tiny_open_clip[1].stem, tiny_open_clip[2]
    oc_model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(checkpoint))
    oc_model.eval()
    assert all(p.requires_grad for p in oc_model.parameters())
    assert not any(a is b for a in oc_model.parameters() for b in model.parameters())

    # the text classifiers: CLIP_benchmark's (templates with {c}) and lr0fm's
    tokenizer = open_clip.get_tokenizer(arch)
    theirs = zero_shot_classifier(oc_model, tokenizer, classnames, [t.replace("{}", "{c}") for t in templates],
                                  "cpu", amp=False)
    ours = build_zero_shot_classifier(model, classnames, templates)
    assert theirs.shape == ours.shape
    assert float((theirs - ours).abs().max()) <= 1e-7  # measured 6.0e-8 (torch 2.14, open_clip 3.3.0, CPU)

    # the images: open_clip's preprocess (what CLIP_benchmark evaluates) vs lr0fm's HR view
    loader = torch.utils.data.DataLoader(_Images(data, preprocess), batch_size=16, num_workers=0)
    logits, target = run_classification(oc_model, theirs, loader, "cpu", amp=False)
    their_top5 = logits.topk(5, dim=-1).indices.numpy()

    store = ResultsStore(tmp_path)
    (record,) = evaluate(model, data, EvalConfig(resolutions=("hr",), workers=0, progress=False), store)
    our_top5 = store.load_predictions(record["cell"])["topk"]
    assert np.array_equal(target.numpy(), store.load_predictions(record["cell"])["labels"])
    assert np.array_equal(our_top5, their_top5)  # image by image, top-5 order included
    assert record["top1"] == pytest.approx(float((their_top5[:, 0] == target.numpy()).mean()))
