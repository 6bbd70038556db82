"""LR tokens (LR-TK0): hooks on every tower type, training, checkpoints, resume, DDP."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_image
from lr0fm.errors import InputError
from lr0fm.models import create_model
from lr0fm.models.towers import find_tower
from lr0fm.tokens import LRTokens, TokenConfig, attach_checkpoint
from lr0fm.tokens.data import load_train_images, step_batch
from lr0fm.tokens.trainer import Distiller, TrainConfig, make_optimizer, train_step, train_tokens


def _zero(tokens: LRTokens) -> None:
    with torch.no_grad():
        for p in tokens.parameters():
            p.zero_()


def _timm_vit(**kw):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, **kw).eval()


def _effnet():
    effnet = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    return effnet.EfficientNet.from_name("efficientnet-lite0").eval()


@pytest.fixture(scope="module")
def oc_model(tiny_open_clip):
    return create_model(tiny_open_clip[0])


@pytest.fixture(scope="module")
def hf_model(tiny_hf_clip):
    return create_model(tiny_hf_clip[0])


@pytest.fixture()
def caption_index(tmp_path):
    """3 captions x 4 images, as 'lr0fm synth' writes them."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    with open(tmp_path / "index.jsonl", "w") as f:
        for c, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
            for j in range(4):
                rel = f"images/{c}_{j}.png"
                make_image(rng, (48 + 4 * j, 40), color).save(tmp_path / rel)
                f.write(json.dumps({"path": rel, "caption_id": c, "caption": f"c{c}"}) + "\n")
    return tmp_path / "index.jsonl"


# -- hooks: tokens off / zero tokens == base model, on every tower type ---------------------------

def _vit_cases(oc_model, hf_model):
    return [("open_clip", oc_model, oc_model.encode_image, 64),
            ("hf", hf_model, hf_model.encode_image, 64),
            ("timm", _timm_vit(), None, 32),
            ("timm+registers", _timm_vit(reg_tokens=2), None, 32),
            ("cnn", _effnet(), None, 64)]


def test_zero_tokens_and_disabled_tokens_are_the_base_model(oc_model, hf_model):
    for name, model, encode, size in _vit_cases(oc_model, hf_model):
        encode = encode or model
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            base = encode(x)
            tokens = LRTokens(model, TokenConfig(), input_size=size)
            try:
                on = encode(x)
                with tokens.disabled():
                    off = encode(x)
                _zero(tokens)
                zero = encode(x)
            finally:
                tokens.detach()
            after = encode(x)
        assert torch.equal(base, off), name
        assert torch.equal(base, zero), name
        assert torch.equal(base, after), name
        assert not torch.allclose(base, on), f"{name}: random tokens must change the output"


def test_tokens_touch_only_patch_positions(oc_model, hf_model):
    """Block inputs: prefix (class/register) positions unchanged, patches shifted by exactly T_l."""
    for name, model, _, size in _vit_cases(oc_model, hf_model):
        tower = find_tower(model)
        tokens = LRTokens(model, TokenConfig(embed=False), input_size=size)
        seen = []
        handle = tower.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
        x = torch.randn(1, 3, size, size)
        run = model.encode_image if hasattr(model, "encode_image") else model
        try:
            with torch.no_grad():
                run(x)
                with tokens.disabled():
                    run(x)
        finally:
            handle.remove()
            tokens.detach()
        on, off = seen
        if tower.kind == "cnn":
            assert torch.allclose(on - off, tokens.tokens["1"].expand_as(on), atol=1e-6), name
            continue
        if not tower.batch_first:
            on, off = on.transpose(0, 1), off.transpose(0, 1)
        p = tower.num_prefix_tokens
        assert on.shape == off.shape, name  # sequence length unchanged
        assert torch.equal(on[:, :p], off[:, :p]), name
        assert torch.allclose(on[:, p:] - off[:, p:], tokens.tokens["1"][None], atol=1e-6), name
        assert tokens.tokens["1"].shape == (tokens.num_patches, on.shape[-1])


def test_layer_selection_vpt_deep_and_cnn_grids(oc_model):
    tokens = LRTokens(oc_model, TokenConfig(last=1))
    assert sorted(tokens.tokens) == ["0", "2"]
    tokens.detach()
    tokens = LRTokens(oc_model, TokenConfig(first=1, embed=False))
    assert sorted(tokens.tokens) == ["1"]
    tokens.detach()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        base = oc_model.encode_image(x)
        vpt = LRTokens(oc_model, TokenConfig(variant="vpt-deep", num_prompts=3))
        out = oc_model.encode_image(x)
        with vpt.disabled():
            off = oc_model.encode_image(x)
        vpt.detach()
    assert out.shape == base.shape and not torch.allclose(out, base) and torch.equal(off, base)
    cnn = _effnet()
    for grid, hw in [(1, (1, 1)), (2, (2, 2)), (0, (32, 32))]:
        t = LRTokens(cnn, TokenConfig(grid=grid), input_size=64)
        assert t.tokens["1"].shape[1:] == hw  # stage 1 input is 32x32 at a 64 px input
        assert len(t.tokens) == find_tower(cnn).depth
        t.detach()


# -- training -------------------------------------------------------------------------------------

def _cfg(**kw):
    base = dict(steps=4, captions=3, per_caption=2, lr=5e-2, warmup=1, buckets=((8, 16), (16, 32)),
                val_fraction=0.0, val_every=1000, save_every=2, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_only_tokens_and_scale_train_and_loss_goes_down(tiny_open_clip, caption_index):
    model = create_model(tiny_open_clip[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_train_images(caption_index)
    d = Distiller(model, _cfg(lr=1e-1))
    trainable = {n for n, p in d.named_parameters() if p.requires_grad}
    assert trainable == {"logit_scale"} | {f"tokens.tokens.{k}" for k in d.tokens.tokens}
    opt, _ = make_optimizer(d, d.cfg)
    losses = [train_step(d, data, 0, opt) for _ in range(8)]  # the same batch: must be fitted
    assert losses[-1] < losses[0] - 1e-3
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_batches_group_images_by_caption(caption_index):
    data = load_train_images(caption_index)
    batch = step_batch(data, step=5, captions=2, per_caption=3, seed=0)
    ids = [data.caption_ids[i] for i in batch]
    assert len(batch) == 6 and len(set(ids)) == 2 and all(ids.count(c) == 3 for c in set(ids))
    assert batch == step_batch(data, 5, 2, 3, 0)  # a pure function of (seed, step): resumable
    assert len({tuple(step_batch(data, s, 2, 3, 0)) for s in range(10)}) > 1
    # an unreadable file is left out of training batches, not fatal
    broken = caption_index.parent / data.paths[0]
    broken.write_bytes(b"not a png")
    assert not data.readable(0) and data.readable(1)


def _no_unpickling(*args, **kwargs):
    raise AssertionError("resuming must not unpickle anything")


def test_checkpoint_roundtrip_and_resume(tiny_open_clip, caption_index, tmp_path, monkeypatch):
    import pickle

    spec = tiny_open_clip[0]
    data = load_train_images(caption_index)
    straight = train_tokens(create_model(spec), data, _cfg(), tmp_path / "a", progress=False)
    # half, "crash", then the same command again resumes from last.safetensors
    train_tokens(create_model(spec), data, _cfg(save_every=3), tmp_path / "b", progress=False, stop_at=2)
    from lr0fm.tokens import read_checkpoint
    assert read_checkpoint(tmp_path / "b" / "last.safetensors")[1]["step"] == "2"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["last.safetensors", "last.state.safetensors"]
    model = create_model(spec)
    with monkeypatch.context() as m:  # the resume state is safetensors + JSON: no pickle is read
        for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
            m.setattr(module, name, _no_unpickling)
        resumed = train_tokens(model, data, _cfg(), tmp_path / "b", progress=False)
    from lr0fm.tokens import read_checkpoint
    a, meta_a = read_checkpoint(tmp_path / "a" / "last.safetensors")
    b, meta_b = read_checkpoint(tmp_path / "b" / "last.safetensors")
    assert meta_a["step"] == meta_b["step"] == "4"
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the tokens moved, and attaching the checkpoint reproduces the trained student exactly
    assert any(float(v.abs().max()) > 0.03 for k, v in a.items() if k.startswith("tokens."))
    x = torch.randn(3, 3, 64, 64)
    fresh = create_model(spec)
    base = fresh.encode_image(x)
    digest = attach_checkpoint(fresh, straight)
    from lr0fm.identity import DIGEST_CHARS
    from lr0fm.tokens.checkpoint import checkpoint_digest
    assert len(digest) == DIGEST_CHARS and digest == checkpoint_digest(straight)
    with torch.no_grad():
        with_tokens = fresh.encode_image(x)
    d = Distiller(create_model(spec), _cfg())
    from lr0fm.tokens.checkpoint import load_into
    load_into(d, straight, d.model)
    with torch.no_grad():
        student = d.model.encode_image(x)
    assert torch.equal(with_tokens, student) and not torch.allclose(with_tokens, base)
    assert resumed.is_file()


def test_resume_refuses_other_settings_unless_restart(tiny_open_clip, caption_index, tmp_path):
    spec = tiny_open_clip[0]
    data = load_train_images(caption_index)
    run = tmp_path / "run"
    train_tokens(create_model(spec), data, _cfg(steps=2), run, progress=False)
    for changed, keys in ((dict(lr=1e-2), "lr"), (dict(buckets=((8, 12),), warmup=2), "buckets, warmup"),
                          (dict(tokens={"first": 1}), "tokens.first")):
        with pytest.raises(InputError, match=rf"other settings \({keys}\); pass --restart") as err:
            train_tokens(create_model(spec), data, _cfg(steps=2, **changed), run, progress=False)
        assert "\n" not in str(err.value)
    # only settings that leave the result unchanged may differ on resume
    train_tokens(create_model(spec), data, _cfg(steps=2, micro_batch=3, save_every=5), run, progress=False)
    # --restart discards the old run: the same tokens as a fresh folder, and no stale best
    restarted = train_tokens(create_model(spec), data, _cfg(steps=2, lr=1e-2), run, progress=False, restart=True)
    fresh = train_tokens(create_model(spec), data, _cfg(steps=2, lr=1e-2), tmp_path / "fresh", progress=False)
    from lr0fm.tokens import read_checkpoint
    (a, meta_a), (b, _) = read_checkpoint(restarted), read_checkpoint(fresh)
    assert json.loads(meta_a["train_config"])["lr"] == 1e-2
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_tokens_changed_settings_need_restart(tiny_open_clip, image_folder, tmp_path, capsys):
    from lr0fm.cli import main
    run = tmp_path / "run"
    base = ["train-tokens", "--model", tiny_open_clip[0], "--data", str(image_folder), "--output", str(run),
            "--steps", "1", "--captions", "4", "--per-caption", "1", "--buckets", "8-16", "--val-fraction", "0",
            "--no-progress", "--device", "cpu"]
    assert main(base) == 0
    before = (run / "best.safetensors").read_bytes()
    capsys.readouterr()
    assert main(base + ["--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(lr)" in err and "--restart" in err
    assert (run / "best.safetensors").read_bytes() == before  # refused: nothing touched
    assert main(base + ["--lr", "0.5", "--restart"]) == 0
    from lr0fm.tokens import read_checkpoint
    assert json.loads(read_checkpoint(run / "best.safetensors")[1]["train_config"])["lr"] == 0.5


def test_attach_rejects_other_models(tiny_open_clip, tiny_hf_clip, caption_index, tmp_path):
    ckpt = train_tokens(create_model(tiny_open_clip[0]), load_train_images(caption_index), _cfg(steps=1),
                        tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="trained for model"):
        attach_checkpoint(create_model(tiny_hf_clip[0]), ckpt)
    other = create_model(tiny_open_clip[0])
    other.info.weights_hash = "0" * 64
    with pytest.raises(InputError, match="other weights"):
        attach_checkpoint(other, ckpt)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable"):
        attach_checkpoint(create_model(tiny_open_clip[0]), tmp_path / "bad.safetensors")


def _sgd(d):
    # plain SGD: parameter differences stay proportional to gradient differences (Adam's first
    # step is ~lr * sign(g), which turns last-bit noise in a ~0 gradient into a 2*lr difference)
    return torch.optim.SGD(d.parameters(), lr=1.0)


def test_micro_batches_and_checkpointing_give_the_same_step(tiny_open_clip, caption_index):
    data = load_train_images(caption_index)
    results = []
    from lr0fm.tokens.trainer import enable_grad_checkpointing
    for mb, checkpointing in ((None, False), (5, False), (None, True)):
        model = create_model(tiny_open_clip[0])
        if checkpointing:
            enable_grad_checkpointing(model)
        d = Distiller(model, _cfg(micro_batch=mb))
        initial = {k: v.detach().clone() for k, v in d.tokens.tokens.items()}
        train_step(d, data, 0, _sgd(d))
        results.append({k: v.detach().clone() for k, v in d.tokens.tokens.items()})
    for other in results[1:]:
        assert all(torch.allclose(results[0][k], other[k], atol=1e-6) for k in results[0])
    assert any(float((results[0][k] - initial[k]).abs().max()) > 1e-4 for k in initial)


def _ddp_worker(rank, world, spec_cfg, spec_ckpt, index, init_file, out):
    import torch.distributed as dist
    import open_clip
    open_clip.add_model_config(str(spec_cfg))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        d = Distiller(create_model(f"open_clip:{spec_cfg}:{spec_ckpt}"), _cfg())
        opt = _sgd(d)
        data = load_train_images(index)
        for step in range(2):
            train_step(d, data, step, opt)
        if rank == 0:
            torch.save({k: v.detach() for k, v in d.tokens.tokens.items()} | {"scale": d.logit_scale.detach()}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~15 s of CPU
def test_ddp_two_processes_match_one(tiny_open_clip, caption_index, tmp_path):
    import torch.multiprocessing as mp
    spec, cfg_path, ckpt = tiny_open_clip
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, cfg_path, ckpt, caption_index, tmp_path / "init", out), nprocs=2)
    ddp = torch.load(out)
    d = Distiller(create_model(spec), _cfg())
    opt = _sgd(d)
    data = load_train_images(caption_index)
    for step in range(2):
        train_step(d, data, step, opt)
    single = {k: v.detach() for k, v in d.tokens.tokens.items()} | {"scale": d.logit_scale.detach()}
    assert ddp.keys() == single.keys()
    for k in single:
        assert torch.allclose(ddp[k], single[k], atol=1e-5), k


def test_cli_train_tokens_then_eval_with_tokens(tiny_open_clip, image_folder, tmp_path, capsys):
    from lr0fm.cli import main
    spec = tiny_open_clip[0]
    run = tmp_path / "run"
    rc = main(["train-tokens", "--model", spec, "--data", str(image_folder), "--output", str(run), "--steps", "2",
               "--captions", "4", "--per-caption", "1", "--buckets", "8-16", "--val-fraction", "0.3",
               "--val-every", "1", "--no-progress", "--device", "cpu"])
    assert rc == 0 and (run / "best.safetensors").is_file() and (run / "last.state.safetensors").is_file()
    ckpt = run / "best.safetensors"
    assert ckpt.stat().st_size < 200_000  # tokens and scale only
    rc = main(["--out", str(tmp_path / "res"), "eval", "--model", spec, "--dataset", "imagefolder",
               "--data-root", str(image_folder), "--resolutions", "16,hr", "--workers", "0", "--no-progress",
               "--lr-tokens", str(ckpt)])
    assert rc == 0
    from lr0fm.store import ResultsStore
    records = ResultsStore(tmp_path / "res").records()
    from lr0fm.tokens import checkpoint_digest
    from lr0fm.records import variant_of
    assert records and all(variant_of(r)["lr_tokens"] == checkpoint_digest(ckpt) for r in records)
    capsys.readouterr()
    assert main(["train-tokens", "--model", spec, "--data", str(tmp_path / "nope"), "--output", str(run)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_train_tokens_bad_config_one_line_nothing_written(tmp_path, capsys):
    from conftest import make_image
    from lr0fm.cli import main
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        make_image(rng, (40, 40)).save(tmp_path / "imgs" / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train-tokens", "--model", "conse-effnet-lite0", "--data", str(tmp_path / "imgs"),
                 "--output", str(out), "--first", "2", "--last", "2", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--first" in err and "--last" in err
    assert not out.exists()


def test_checkpoint_digest_is_content_not_file_bytes(tmp_path):
    """safetensors writes its header in hash-map order: the same tokens must keep one id."""
    import json
    import struct

    from safetensors.torch import save_file

    from lr0fm.filedigest import sha256_file as file_sha256
    from lr0fm.tokens import checkpoint_digest
    from lr0fm.tokens.checkpoint import FORMAT
    tensors = {"tokens.0": torch.randn(2, 3), "logit_scale": torch.ones(1)}
    meta = {"format": FORMAT, "model_id": "m", "weights_hash": "h", "step": "1"}
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    save_file(tensors, str(a), metadata=meta)
    raw = a.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    reordered = json.dumps(dict(reversed(list(header.items()))), separators=(",", ":")).encode()
    assert len(reordered) <= n
    b.write_bytes(raw[:8] + reordered.ljust(n) + raw[8 + n:])
    assert file_sha256(a) != file_sha256(b)
    assert checkpoint_digest(a) == checkpoint_digest(b)
    tensors["tokens.0"][0, 0] += 1
    save_file(tensors, str(c), metadata=meta)
    assert checkpoint_digest(c) != checkpoint_digest(a)


def test_amp_bf16_is_applied_on_cpu_too(tiny_open_clip, caption_index):
    """--amp bf16 is in the run's config, so it must be what ran (eval honours it on CPU as well)."""
    data = load_train_images(caption_index)
    losses = {}
    for amp in (None, "bf16"):
        torch.manual_seed(0)
        d = Distiller(create_model(tiny_open_clip[0]), _cfg(amp=amp))
        opt, _ = make_optimizer(d, d.cfg)
        losses[amp] = [train_step(d, data, s, opt) for s in range(2)]
    assert all(np.isfinite(losses["bf16"]))
    assert losses["bf16"] != losses[None]  # bf16 rounding shows: autocast was on
