"""WordNet 3.0 from the Debian ``wordnet`` package, read with nltk (no nltk.download), and the
mapping of a dataset's classes to noun synsets.

Classes map to synsets through the dataset's packaged ``wnids.txt`` (ImageNet-style label sets;
variants that share ImageNet-1k's class list use its wnids), else through their name: the first
noun synset of the name with spaces as underscores ('musical instrument' -> musical_instrument.n.01).
"""
from __future__ import annotations

import io
import os
from functools import lru_cache
from typing import Sequence

from .. import resources
from ..datasets.base import DatasetError
from ..extras import require

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
WORDNET_ENV = "LR0FM_WORDNET"

# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)). nltk's reader requires a 'lexnames'
# file, which Debian's wordnet-base does not ship; its content is fixed by the WordNet format.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object noun.person "
    "noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl").split()
_LEX_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def wordnet_dir() -> str:
    return os.environ.get(WORDNET_ENV, DEFAULT_WORDNET_DIR)


@lru_cache(maxsize=2)
def load_wordnet(root: str | None = None):
    """An nltk WordNetCorpusReader over a WordNet 3.0 dict directory (Debian: /usr/share/wordnet)."""
    root = os.path.abspath(root or wordnet_dir())
    if not os.path.isfile(os.path.join(root, "data.noun")):
        raise DatasetError(f"WordNet 3.0 not found in {root}: install it with 'apt-get install wordnet' "
                           f"(or point ${WORDNET_ENV} at a WordNet dict directory)")
    import warnings
    require("nltk", "reading WordNet", DatasetError)
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class DictDirWordNet(WordNetCorpusReader):
        """Reads a bare WordNet dict directory: no lexnames file, no Open Multilingual WordNet."""

        def open(self, fileid):
            if fileid == "lexnames":
                return io.StringIO("".join(f"{i:02d}\t{name}\t{_LEX_POS_NUMBER[name.split('.')[0]]}\n"
                                           for i, name in enumerate(LEXNAMES)))
            return super().open(fileid)

        def map_wn(self, version="wordnet"):
            return None  # the synset mapping to nltk's own WordNet copy only serves OMW

    # nltk only reads corpora from its data path; declare this directory as one.
    if root not in nltk.data.path:
        nltk.data.path.append(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": none needed
        return DictDirWordNet(root, None)


def synset_for_wnid(wn, wnid: str):
    """'n01443537' -> Synset('goldfish.n.01')."""
    return wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))


def synset_for_name(wn, name: str):
    """First noun synset of a class name (spaces -> underscores), or None."""
    found = wn.synsets(name.strip().replace(" ", "_"), "n")
    return found[0] if found else None


def _packaged_wnids(dataset_key: str, classnames: Sequence[str]) -> list[str] | None:
    """The wnids of an ImageNet-style label set whose class list is the one given, if any."""
    candidates = [dataset_key, "imagenet1k"]  # ImageNet-V2/-Sketch use ImageNet-1k's classes
    for key in candidates:
        wnids_file, names_file = f"datasets/data/{key}/wnids.txt", f"datasets/data/{key}/classnames.txt"
        if not (resources.exists(wnids_file) and resources.exists(names_file)):
            continue
        names = [l.strip() for l in resources.read_text(names_file).splitlines() if l.strip()]
        if names == [c.strip() for c in classnames]:
            return [l.strip() for l in resources.read_text(wnids_file).splitlines() if l.strip()]
    return None


def class_synsets(wn, dataset_key: str, classnames: Sequence[str]) -> tuple[list, str]:
    """Synset (or None) per class, and how they were found ('wnids' or 'lemma')."""
    wnids = _packaged_wnids(dataset_key, classnames)
    if wnids is not None:
        return [synset_for_wnid(wn, w) for w in wnids], "wnids"
    return [synset_for_name(wn, c) for c in classnames], "lemma"


def wup(a, b) -> float:
    """Wu-Palmer similarity of two synsets. The same synset is 1 by definition; nltk's path-based
    value is below 1 for synsets with several hypernym paths (dog.n.01 with itself: 0.93)."""
    return 1.0 if a == b else float(a.wup_similarity(b))
