"""``lr0fm train-tokens``: train LR tokens on a synth index or a folder of unlabeled images.

Under ``torchrun --nproc_per_node N`` each rank takes its slice of every global batch (gloo on
CPU, nccl on GPU); the result equals a single-process run on the same global batch.
"""
from __future__ import annotations

import os

from . import DEFAULT_MODEL, add_command, number


def _buckets(text: str) -> tuple:
    from ..errors import InputError
    try:
        return tuple(tuple(int(v) for v in part.split("-")) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--buckets {text!r}: give lo-hi pairs, e.g. 16-32,32-64,64-128") from None


def add_commands(sub) -> None:


    p = add_command(sub, "train-tokens", help="train LR-TK0 low-resolution tokens (self-distillation from HR)")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL)
    p.add_argument("--data", required=True, help="a synth index (.jsonl/.csv from 'lr0fm synth') or a folder of images")
    p.add_argument("--output", "-o", required=True, help="run folder: last/best .safetensors (+ resume state); "
                                                          "rerunning the same command resumes")
    p.add_argument("--restart", action="store_true",
                   help="discard a run already in --output (needed to change its settings) and start over")
    p.add_argument("--steps", type=number(least=1), default=1000)
    p.add_argument("--captions", type=number(least=1), default=32, help="caption ids per global batch")
    p.add_argument("--per-caption", type=number(least=1), default=4, help="images per caption id (hard negatives)")
    p.add_argument("--lr", type=number(float, above=0), default=1e-3)
    p.add_argument("--weight-decay", type=number(float, least=0), default=0.0)
    p.add_argument("--warmup", type=number(least=0), default=50)
    p.add_argument("--buckets", default="16-32,32-64,64-128", help="LR size buckets lo-hi, one view each")
    p.add_argument("--no-hr-view", action="store_true", help="the student does not see the HR view")
    p.add_argument("--target", default="embedding", choices=["embedding", "pooled", "logits"],
                   help="features distilled: the model's embedding, or (ConSE) pooled CNN features / logits")
    p.add_argument("--aux", default="none", choices=["none", "cosine", "kl"], help="non-saturating loss beside InfoNCE")
    p.add_argument("--aux-weight", type=number(float, least=0), default=1.0)
    p.add_argument("--variant", default="additive", choices=["additive", "vpt-deep"])
    p.add_argument("--first", type=number(least=1), default=None, help="tokens in the first k blocks only")
    p.add_argument("--last", type=number(least=1), default=None, help="tokens in the last k blocks only")
    p.add_argument("--num-prompts", type=number(least=1), default=8, help="vpt-deep prompts per block")
    p.add_argument("--grid", type=number(least=0), default=0,
                   help="CNN token maps: 0 = full HxW, 1 = per channel, g = g x g")
    p.add_argument("--micro-batch", type=number(least=1), default=None,
                   help="views per forward (memory); same gradients")
    p.add_argument("--amp", choices=["bf16"], default=None,
                   help="bf16 autocast (GPU; also on CPU, slow without bf16 units; fp16 would need loss scaling)")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--val-fraction", type=number(float, least=0, below=1), default=0.05,
                   help="held-out training images for model selection")
    p.add_argument("--val-every", type=number(least=1), default=100)
    p.add_argument("--save-every", type=number(least=1), default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train_tokens)


def cmd_train_tokens(args) -> int:
    import torch

    from ..models import create_model
    from ..tokens.data import load_train_images
    from ..tokens.trainer import TrainConfig, train_tokens

    data = load_train_images(args.data)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    from ..distributed import check_device
    check_device(device)
    if world > 1:
        import torch.distributed as dist
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    tokens = {"variant": args.variant, "first": args.first, "last": args.last, "num_prompts": args.num_prompts,
              "grid": args.grid}
    cfg = TrainConfig(steps=args.steps, captions=args.captions, per_caption=args.per_caption, lr=args.lr,
                      weight_decay=args.weight_decay, warmup=args.warmup, buckets=_buckets(args.buckets),
                      hr_view=not args.no_hr_view, target=args.target, aux=args.aux, aux_weight=args.aux_weight,
                      micro_batch=args.micro_batch, amp=args.amp, grad_checkpointing=args.grad_checkpointing,
                      seed=args.seed, val_fraction=args.val_fraction, val_every=args.val_every,
                      save_every=args.save_every, tokens=tokens)
    try:
        model = create_model(args.model, device=device)
        best = train_tokens(model, data, cfg, args.output, progress=not args.no_progress, restart=args.restart)
    finally:
        if world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"tokens: {best}")
        print(f"evaluate: lr0fm eval --model {args.model} --lr-tokens {best}")
    return 0
