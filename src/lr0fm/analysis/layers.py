"""Layer-wise LR damage: how close each layer's features of an LR view stay to those of the HR view.

The same images are seen at HR and at every LR resolution (views from the model's Protocol); the
outputs of the patch embedding and of every transformer block (ViT) or stage (CNN) are recorded
with ``LayerRecorder`` and mean-pooled over patch tokens / spatial positions (class and register
tokens dropped). Two similarities per layer and resolution:

* cosine: per image, cos(pooled HR, pooled LR), averaged over the images;
* linear CKA (Kornblith et al., ICML 2019) between the [n, D] pooled HR and LR features of all
  images: invariant to rotation and isotropic scaling, so it compares representations as a whole.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..datasets.base import LabeledImages
from ..errors import InputError
from ..evaluation.loading import UNREADABLE
from ..models.base import ZeroShotModel
from ..models.towers import LayerRecorder, Tower, find_tower
from ..protocol import HR, LR_RESOLUTIONS
from . import pyplot, save_figure, slug, write_csv, write_json

DEFAULT_LIMIT = 256


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between features x [n, d1] and y [n, d2] of the same n inputs.

    With column-centred X and Y: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), the feature-space form
    of HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T)) (Kornblith et al. 2019, eq. 5).
    """
    x, y = x.double(), y.double()
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denominator == 0:
        return float("nan")  # a constant representation has no CKA
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denominator)


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over rows of cos(x_i, y_i)."""
    return float(torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=-1).mean())


def pool_layers(features: dict[str, torch.Tensor], tower: Tower) -> dict[str, torch.Tensor]:
    """Recorded layer outputs -> [B, D] per layer: mean over patch tokens (ViT) or positions (CNN)."""
    embed = features["embed"]
    if tower.embed_layout == "bdhw":        # conv patch embedding / CNN stem: [B, D, h, w]
        n_patches, pooled = embed.shape[2] * embed.shape[3], {"embed": embed.mean((2, 3))}
    elif embed.ndim == 4:                   # timm patch embedding with dynamic size: [B, h, w, D]
        n_patches, pooled = embed.shape[1] * embed.shape[2], {"embed": embed.mean((1, 2))}
    else:                                   # [B, N, D] patch tokens (no prefix tokens yet)
        n_patches, pooled = embed.shape[1], {"embed": embed.mean(1)}
    start = tower.num_prefix_tokens
    for name in tower.layer_names()[1:]:
        x = features[name]
        if tower.kind == "cnn":
            pooled[name] = x.mean((2, 3))
        else:  # [B, prefix + patches (+ anything appended), D]: the patch tokens only
            pooled[name] = x[:, start:start + n_patches].mean(1)
    return {k: v.float().cpu() for k, v in pooled.items()}


@dataclass
class LayerSimilarity:
    """Per layer and resolution: HR-vs-LR cosine and linear CKA of pooled features."""

    model: str
    dataset: str
    tower: str
    layers: list[str]
    resolutions: list[int | str]
    cosine: list[list[float]]   # [resolution][layer]
    cka: list[list[float]]      # [resolution][layer]
    n_images: int
    n_skipped: int = 0
    variant: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        return [{"model": self.model, "dataset": self.dataset, "variant": _variant_text(self.variant),
                 "resolution": r, "depth": d, "layer": layer, "cosine": self.cosine[i][d], "cka": self.cka[i][d],
                 "n_images": self.n_images}
                for i, r in enumerate(self.resolutions) for d, layer in enumerate(self.layers)]

    def table(self) -> str:
        head = f"{'layer':<10}" + "".join(f"{_res_label(r):>17}" for r in self.resolutions)
        lines = [f"== {self.model} on {self.dataset} ({self.tower}, {self.n_images} images"
                 + (f", {_variant_text(self.variant)}" if self.variant else "") + ")",
                 "HR-vs-LR similarity of mean-pooled features: cosine / linear CKA", head]
        for d, layer in enumerate(self.layers):
            lines.append(f"{layer:<10}" + "".join(f"{self.cosine[i][d]:>9.3f} /{self.cka[i][d]:>6.3f}"
                                                  for i in range(len(self.resolutions))))
        if self.n_skipped:
            lines.append(f"({self.n_skipped} unreadable images skipped)")
        return "\n".join(lines)

    def plot(self, path: Path) -> Path:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.45 * len(self.layers) + 5), 3.6))
        for ax, values, title in ((axes[0], self.cosine, "cosine (mean over images)"),
                                  (axes[1], self.cka, "linear CKA")):
            for i, r in enumerate(self.resolutions):
                ax.plot(range(len(self.layers)), values[i], marker="o", ms=3, label=_res_label(r))
            ax.set_xticks(range(len(self.layers)), self.layers, rotation=60, fontsize=7)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("depth")
            ax.set_ylabel("similarity to HR")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, title="LR view")
        fig.suptitle(f"{self.model} on {self.dataset}" + (f" [{_variant_text(self.variant)}]" if self.variant else ""),
                     fontsize=10)
        return save_figure(fig, path)

    def save(self, directory: Path) -> dict[str, Path]:
        stem = "layers_" + slug(self.model, self.dataset, *(f"{k}-{v}" for k, v in sorted(self.variant.items())))
        directory = Path(directory)
        return {"json": write_json(directory / f"{stem}.json", asdict(self)),
                "csv": write_csv(directory / f"{stem}.csv", self.rows()),
                "png": self.plot(directory / f"{stem}.png")}


def _res_label(r) -> str:
    return "HR" if r == HR else f"{r} px"


def _variant_text(variant: dict) -> str:
    return ",".join(f"{k}={str(v)[:12]}" for k, v in sorted(variant.items()))


@torch.no_grad()
def layer_similarity(model: ZeroShotModel, data: LabeledImages,
                     resolutions: Sequence[int | str] = LR_RESOLUTIONS, limit: int | None = DEFAULT_LIMIT,
                     batch_size: int = 16, variant: dict | None = None) -> LayerSimilarity:
    """HR-vs-LR similarity after every layer, over the first ``limit`` images of ``data``.

    ``resolutions`` may contain 'hr' (a second, separately computed HR view: similarity 1).
    """
    tower = find_tower(model)
    keys = [HR] + list(resolutions)
    protocol = model.protocol(keys)
    device = model.device
    n = len(data) if limit is None else min(limit, len(data))
    # pooled[view position][layer] -> list of [b, D] chunks
    pooled: list[dict[str, list[torch.Tensor]]] = [{name: [] for name in tower.layer_names()} for _ in keys]
    n_valid = n_skipped = 0
    for start in range(0, n, batch_size):
        views = []
        for index in range(start, min(start + batch_size, n)):
            try:
                views.append(protocol.views_uint8(data.load_image(index), keys))
            except UNREADABLE:
                n_skipped += 1
        if not views:
            continue
        b = len(views)
        batch = protocol.normalize_batch(torch.from_numpy(np.stack(views)).to(device).flatten(0, 1))  # [b*R, 3, S, S]
        with LayerRecorder(tower) as recorder:
            model.encode_image(batch)
            features = pool_layers(recorder.features, tower)
        for name, x in features.items():
            x = x.view(b, len(keys), -1)
            for j in range(len(keys)):
                pooled[j][name].append(x[:, j])
        n_valid += b
    if n_valid < 2:
        raise InputError(f"layer analysis needs at least 2 readable images, {data.spec.key} gave {n_valid}; "
                         "raise --limit or check the dataset")
    layers = tower.layer_names()
    cat = [{name: torch.cat(chunks) for name, chunks in view.items()} for view in pooled]
    hr = cat[0]
    cosine = [[mean_cosine(hr[l], cat[j][l]) for l in layers] for j in range(1, len(keys))]
    cka = [[linear_cka(hr[l], cat[j][l]) for l in layers] for j in range(1, len(keys))]
    return LayerSimilarity(model=model.info.extra.get("catalog_name", model.info.model_id), dataset=data.spec.key,
                           tower=tower.name, layers=layers, resolutions=list(resolutions), cosine=cosine, cka=cka,
                           n_images=n_valid, n_skipped=n_skipped, variant=dict(variant or {}))


__all__ = ["DEFAULT_LIMIT", "LayerSimilarity", "layer_similarity", "linear_cka", "mean_cosine", "pool_layers"]
