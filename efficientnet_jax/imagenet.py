"""The 1000 ImageNet-1k classes in the order every published head uses (sorted WordNet synset ids).

``imagenet_classes.tsv`` holds ``synset<TAB>names``; it is timm's ``imagenet_synsets.txt`` joined with
``imagenet_synset_to_lemma.txt`` (Apache-2.0), whose names come from WordNet.
"""
from __future__ import annotations

import functools
import importlib.resources

NUM_CLASSES = 1000


@functools.cache
def _table() -> tuple[tuple[str, str], ...]:
    text = importlib.resources.files("efficientnet_jax").joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)
    assert len(rows) == NUM_CLASSES, f"imagenet_classes.tsv has {len(rows)} rows"
    return rows


def synsets() -> tuple[str, ...]:
    """WordNet ids ('n01440764', ...) by class index; ImageNet folders and tfds use them as labels."""
    return tuple(s for s, _ in _table())


def class_names() -> tuple[str, ...]:
    """A short readable name per class index: the first WordNet lemma ('tabby', 'espresso')."""
    return tuple(names.split(",")[0] for _, names in _table())


def class_index(synset: str) -> int:
    """Index of a synset id; ValueError names it when it is not one of the 1000."""
    try:
        return synsets().index(synset)
    except ValueError:
        raise ValueError(f"{synset!r} is not an ImageNet-1k synset id (like 'n01440764')") from None
