"""At HR lr0fm agrees with CLIP_benchmark's own zero-shot path (PyPI clip-benchmark 1.6.2:
``zero_shot_classifier`` + ``run_classification``) on the same open_clip checkpoint and images:
text classifiers within 1e-7 and the same per-image top-5, in order."""
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

    # the text classifiers: CLIP_benchmark's (templates with {c}) and lr0fm's
    oc_model = model.model
    tokenizer = open_clip.get_tokenizer(str(tiny_open_clip[1].stem))
    theirs = zero_shot_classifier(oc_model, tokenizer, classnames, [t.replace("{}", "{c}") for t in templates],
                                  "cpu", amp=False)
    ours = build_zero_shot_classifier(model, classnames, templates)
    assert theirs.shape == ours.shape
    assert float((theirs - ours).abs().max()) <= 1e-7

    # the images: open_clip's preprocess (what CLIP_benchmark evaluates) vs lr0fm's HR view
    _, _, preprocess = open_clip.create_model_and_transforms(str(tiny_open_clip[1].stem), pretrained=None)
    loader = torch.utils.data.DataLoader(_Images(data, preprocess), batch_size=16, num_workers=0)
    logits, target = run_classification(oc_model, theirs, loader, "cpu", amp=False)
    their_top5 = logits.topk(5, dim=-1).indices.numpy()

    store = ResultsStore(tmp_path)
    (record,) = evaluate(model, data, EvalConfig(resolutions=("hr",), workers=0, progress=False), store)
    our_top5 = store.load_predictions(record["cell"])["topk"]
    assert np.array_equal(target.numpy(), store.load_predictions(record["cell"])["labels"])
    assert np.array_equal(our_top5, their_top5)  # image by image, top-5 order included
    assert record["top1"] == pytest.approx(float((their_top5[:, 0] == target.numpy()).mean()))
