"""lr0fm synth: synthetic training images for LR tokens (diffusers)."""
from __future__ import annotations

import os

from ..synth import DEFAULT_PIPELINE, parse_shard, read_captions, synthesize
from . import add_command, number


def add_commands(sub) -> None:


    p = add_command(sub, "synth", help="generate synthetic training images for LR tokens (diffusers)")
    p.add_argument("--captions", required=True, help="text file, one caption per line")
    p.add_argument("--output", "-o", required=True, help="folder for images/ and index.jsonl")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="diffusers pipeline id or local folder")
    p.add_argument("--images-per-caption", "-n", type=number(least=1), default=4)
    p.add_argument("--shard", default=None, help="i/n: this process makes images k with k mod n == i "
                                                  "(default: torchrun RANK/WORLD_SIZE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=number(least=1), default=4)
    p.add_argument("--steps", type=number(least=1), default=None, help="inference steps (default: the pipeline's)")
    p.add_argument("--size", type=number(least=8), default=None, help="image size in px (default: the pipeline's)")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    import torch
    captions = read_captions(args.captions)
    shard = parse_shard(args.shard)
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    from ..distributed import check_device
    check_device(device)
    index = synthesize(captions, args.output, args.pipeline, args.images_per_caption, shard, args.seed,
                       args.batch_size, args.steps, args.size, args.guidance, device, args.dtype,
                       progress=not args.no_progress)
    print(f"index: {index}")
    return 0
