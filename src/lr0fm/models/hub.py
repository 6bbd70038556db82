"""Weights files: offline-aware access (fail at once instead of long hub retries), the hub commit
a model was loaded from, which files of a save_pretrained folder identify it, and the one way a
pickled weights file that would run code is refused."""
from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import warnings
from functools import lru_cache
from pathlib import Path

from ..digests import folder_files
from ..identity import weights_from_folder
from .base import ModelError

HUB_HOST = os.environ.get("LR0FM_HUB_HOST", "huggingface.co")


@lru_cache(maxsize=1)
def network_available(timeout: float = 3.0) -> bool:
    """One quick TCP probe of the hub (cached for the process)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def go_offline_if_unreachable() -> None:
    """Put huggingface_hub in offline mode when the hub cannot be reached, so a missing file
    raises immediately rather than after minutes of retries."""
    if network_available():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as c
        c.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


def open_clip_hf_weights(repo_id: str) -> str:
    """The local path of the weights file open_clip loads for ``hf-hub:ORG/NAME`` (its own file
    choice: safetensors first), downloaded once into the Hugging Face cache; from the cache alone
    when offline. open_clip's create_model then finds the same cached file."""
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        return download_pretrained_from_hf(repo_id)
    except Exception as e:  # offline and not cached, no such repo, or the hub refused
        raise ModelError(f"weights for hf-hub:{repo_id} are not available here ({type(e).__name__}); download them "
                         "where there is network (they go to the Hugging Face cache) or pass ARCH:/path/to/checkpoint") from None


# The files of a save_pretrained folder that can change a number: every weights file (all shards,
# safetensors and .bin) with its index, the config, the tokenizer's files, and local remote code.
# The image processor is left out: lr0fm makes its own views, and the protocol records them.
SAVE_PRETRAINED_FILES = ("*.safetensors", "*.bin", "*.index.json", "config.json", "tokenizer*.json",
                         "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model", "*.py")


def save_pretrained_hash(folder: str | os.PathLike) -> str | None:
    """The weights fingerprint of a save_pretrained folder (lr0fm.identity.weights_from_folder of
    its SAVE_PRETRAINED_FILES), so a re-saved fine-tune gets a new one and a moved folder keeps it
    (the local counterpart of a hub commit). None when the folder holds no weights."""
    if not any(p.suffix in (".safetensors", ".bin") for p in folder_files(folder, SAVE_PRETRAINED_FILES)):
        return None
    return weights_from_folder(folder, SAVE_PRETRAINED_FILES)


def hub_commit(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The commit a hub model was loaded from: the Hugging Face cache's snapshot folder that
    ``revision`` (default: the main branch) points to, the resolution from_pretrained just made --
    online or offline, with every transformers version. None when the repo is not in the cache."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "config.json", revision=revision, cache_dir=cache_dir)
    found = re.search(r"/snapshots/([0-9a-f]{40})/", Path(path).as_posix()) if isinstance(path, str) else None
    return found.group(1) if found else None


def cached_revision(repo_id: str, revision: str | None = None) -> str | None:
    """The commit the local hub cache's ``revision`` (default: main) of ``repo_id`` points to, from
    the cache's refs alone (any file layout: transformers and open_clip repositories alike); a
    40-hex ``revision`` is itself. None when the repository is not in the cache."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs" / (revision or "main")
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


# -- pickled weights: tensors and plain data only, unless the user trusts the file -------------
def refused_pickle(path: str | os.PathLike, error: pickle.UnpicklingError, opt_in: bool = True) -> ModelError:
    """The one line for a weights pickle that torch's weights-only unpickler refused: what it
    would have built (a ``GLOBAL`` torch names, e.g. ``posix.mkdir``), the safe format and, where
    the backend has it, the opt-in (``--trust-checkpoint``)."""
    text = str(error)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        what = f"would call {found.group(1).rstrip('.,')} when loaded, which can run code"
    else:  # torch's own reason, e.g. an opcode its unpickler does not read
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        reasons = [p for p in paragraphs if not p.startswith(("Weights only load failed", "Check the documentation"))]
        reason = (reasons or paragraphs or ["unreadable"])[0].splitlines()[0][:120]
        what = f"holds more than tensors and plain data ({reason})"
    trust = (", or pass --trust-checkpoint (trust_checkpoint=True) if you trust the file's source" if opt_in else
             " where you trust the file's source")
    return ModelError(f"{path}: a pickle that {what}; lr0fm loads weights as tensors only: save them as .safetensors "
                      f"(safetensors.torch.save_file){trust}")


@contextlib.contextmanager
def tensors_only(path: str | os.PathLike, opt_in: bool = True):
    """Around a weights-only load: a refused pickle becomes ``refused_pickle``'s ModelError, and
    torch's notice about an unusual pickle protocol (a file not saved by torch.save) is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        try:
            yield
        except pickle.UnpicklingError as e:
            raise refused_pickle(path, e, opt_in) from None
