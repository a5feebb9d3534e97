r"""Text captions of Shapes items, a word vocabulary that turns captions into padded token ids, and
:class:`TokenRows`, tokenised texts stored flat (how the file-backed sources hold their captions).

A caption names the size, colour, shape and position of the item ("a small red circle at the top
left"), and its background when backgrounds vary. Paraphrase variety comes from a per-item
*phrasing* code that picks one of several sentence templates and synonyms for the size words; the
phrasing is a nuisance variable, not a factor, so two items with equal factors may be described
differently, and a caption always determines the factors' words.

Size words split the size range into thirds (small / medium / large); position words split the
centre range into a 3 x 3 grid (top left, top, top right, left, centre, right, bottom left, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: Sentence templates; the slots are filled with one phrase each.
TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} at the {position}",
    "there is a {size} {colour} {shape} in the {position}",
    "the {position} has a {size} {colour} {shape}",
    "a {colour} {shape} that is {size} at the {position}",
    "{size} {colour} {shape} near the {position}",
    "you can see a {size} {colour} {shape} in the {position}",
)

#: Synonyms for the three size levels (small, medium, large).
SIZE_WORDS: tuple[tuple[str, ...], ...] = (("small", "little", "tiny"), ("medium", "midsize"),
                                           ("large", "big", "huge"))

#: Position phrases on a 3 x 3 grid, indexed [row][column] (row 0 = top, column 0 = left).
POSITION_WORDS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)

#: Number of distinct phrasing codes: a template times a synonym choice.
N_PHRASINGS = len(TEMPLATES) * 6

#: What a caption can name; a caption that names only some (``named=``) is built from :data:`PARTIAL_TEMPLATES`.
CAPTION_WORDS: tuple[str, ...] = ("size", "colour", "shape", "position")

#: Sentence templates of captions that name only some factors; ``{desc}`` is the named words in the usual order
#: ("small red circle at the top left" without the words left out; "shape" stands in for an unnamed shape).
PARTIAL_TEMPLATES: tuple[str, ...] = ("a {desc}", "there is a {desc}", "you can see a {desc}")

PAD, UNK = "<pad>", "<unk>"


def level(values: Tensor, low: float, high: float) -> Tensor:
    """Thirds of the range ``[low, high]``: 0, 1 or 2 for each value, int64 with the shape of ``values``."""
    t = (values.to(torch.float64) - low) / (high - low)
    return (t * 3).floor().clamp(0, 2).to(torch.int64)


def describe(*, shape: Sequence[str], colour: Sequence[str], size_level: Sequence[int],
             row: Sequence[int], column: Sequence[int], phrasing: Sequence[int],
             background: Sequence[str] | None = None, named: Sequence[str] = CAPTION_WORDS) -> list[str]:
    """Captions for items given their factor words and levels.

    With ``named`` a subset of :data:`CAPTION_WORDS`, the caption names only those factors (a caption that
    names only the shape says nothing of colour, size or position: those stay private to the image).

    Args:
        shape: Shape names, length N.
        colour: Colour names, length N.
        size_level: 0 small, 1 medium, 2 large; length N.
        row: 0 top, 1 middle, 2 bottom; length N.
        column: 0 left, 1 centre, 2 right; length N.
        phrasing: Phrasing codes in ``[0, N_PHRASINGS)``; length N.
        background: Optional background colour names, length N.
        named: The factors the caption names, a non-empty subset of :data:`CAPTION_WORDS`.

    Returns:
        N captions, lower case, words separated by single spaces.

    Raises:
        ValueError: For a phrasing code or level out of range, or an unknown or empty ``named``.

    Example:
        >>> describe(shape=["circle"], colour=["red"], size_level=[0], row=[0], column=[0], phrasing=[0])
        ['a small red circle at the top left']
        >>> describe(shape=["circle"], colour=["red"], size_level=[0], row=[0], column=[0], phrasing=[1],
        ...          named=["shape"])
        ['there is a circle']
    """
    named = check_named(named)
    out = []
    for i in range(len(shape)):
        p = int(phrasing[i])
        if not 0 <= p < N_PHRASINGS:
            raise ValueError(f"phrasing must be in [0, {N_PHRASINGS}), got {p}")
        for name, value in (("size_level", size_level[i]), ("row", row[i]), ("column", column[i])):
            if not 0 <= int(value) <= 2:
                raise ValueError(f"{name} must be 0, 1 or 2, got {int(value)}")
        synonyms = SIZE_WORDS[int(size_level[i])]
        if len(named) < len(CAPTION_WORDS):
            desc = [synonyms[(p // len(TEMPLATES)) % len(synonyms)] if "size" in named else "",
                    colour[i] if "colour" in named else "", shape[i] if "shape" in named else "shape",
                    f"at the {POSITION_WORDS[int(row[i])][int(column[i])]}" if "position" in named else ""]
            text = PARTIAL_TEMPLATES[p % len(PARTIAL_TEMPLATES)].format(desc=" ".join(w for w in desc if w))
            out.append(text + (f" on a {background[i]} background" if background is not None else ""))
            continue
        text = TEMPLATES[p % len(TEMPLATES)].format(
            size=synonyms[(p // len(TEMPLATES)) % len(synonyms)], colour=colour[i], shape=shape[i],
            position=POSITION_WORDS[int(row[i])][int(column[i])])
        if background is not None:
            text += f" on a {background[i]} background"
        out.append(text)
    return out


def check_named(named: Sequence[str]) -> tuple[str, ...]:
    """The factors a caption names, checked: a non-empty subset of :data:`CAPTION_WORDS`, in their order."""
    if isinstance(named, str) or not isinstance(named, Sequence) or not named:
        raise ValueError(f"caption_words must be a non-empty list of {', '.join(CAPTION_WORDS)}, got {named!r}")
    unknown = [w for w in named if w not in CAPTION_WORDS]
    if unknown:
        raise ValueError(f"caption_words: unknown {unknown[0]!r}; a caption can name {', '.join(CAPTION_WORDS)}")
    return tuple(w for w in CAPTION_WORDS if w in named)


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of ``text``."""
    return re.findall(r"[a-z0-9']+|[^\sa-z0-9']", text.lower())


class Vocabulary:
    r"""A fixed word list mapping tokens to ids: ``0`` is padding, ``1`` unknown words.

    Args:
        tokens: The words, in id order after the two special tokens (duplicates are dropped).

    Example:
        >>> vocab = Vocabulary(["a", "red", "circle"])
        >>> ids, lengths = vocab.encode(["a red circle", "a blue circle"])
        >>> ids.tolist(), lengths.tolist(), vocab.decode(ids[1])
        ([[2, 3, 4], [2, 1, 4]], [3, 3], 'a <unk> circle')
    """

    def __init__(self, tokens: Iterable[str]):
        self.tokens: tuple[str, ...] = tuple(dict.fromkeys([PAD, UNK, *tokens]))
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Vocabulary":
        """A vocabulary of every word in ``texts``, sorted (so it does not depend on their order)."""
        return cls(sorted({w for t in texts for w in words(t)}))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[str], *, length: int | None = None) -> tuple[Tensor, Tensor]:
        """Token ids, int64 (N, T) right-padded with 0, and lengths, int64 (N,).

        ``length`` fixes T (longer texts raise ``ValueError``); by default T is the longest text.
        """
        rows = [[self._ids.get(w, 1) for w in words(t)] for t in texts]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        longest = int(lengths.max()) if rows else 0
        width = longest if length is None else int(length)
        if longest > width:
            raise ValueError(f"a text has {longest} tokens, more than length={width}")
        ids = torch.zeros(len(rows), width, dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
        return ids, lengths

    def decode(self, ids: Tensor) -> str:
        """The words of one row of ids, padding dropped."""
        return " ".join(self.tokens[int(i)] for i in ids if int(i) != 0)


def shapes_vocabulary(shape_names: Sequence[str], colour_names: Sequence[str],
                      background_names: Sequence[str] = (), named: Sequence[str] = CAPTION_WORDS) -> tuple[Vocabulary, int]:
    """The closed vocabulary of Shapes captions and the longest caption in tokens.

    Every word any template, synonym, colour, shape or background can produce is listed, so train
    and test splits share one vocabulary and one padded length.
    """
    slot_words = [w for group in SIZE_WORDS for w in group]
    slot_words += [w for row in POSITION_WORDS for phrase in row for w in words(phrase)]
    fixed = [w for t in TEMPLATES for w in words(re.sub(r"\{\w+\}", " ", t))]
    extra = ["on", "a", "background", *background_names] if background_names else []
    if "shape" not in check_named(named):
        extra = [*extra, "shape"]
    vocab = Vocabulary(sorted({*fixed, *slot_words, *extra, *shape_names, *colour_names}))
    longest_position = max(len(words(p)) for row in POSITION_WORDS for p in row)
    longest = max(len(words(re.sub(r"\{\w+\}", " ", t))) + 3 + longest_position for t in TEMPLATES)
    return vocab, longest + (4 if background_names else 0)


@dataclass
class TokenRows:
    """Texts as token ids, held one after another (int32) so that they pickle as two flat arrays.

    Example:
        >>> rows = TokenRows.encode(Vocabulary(["a", "dot"]), ["a dot", "dot"])
        >>> ids, n = rows.row(1)
        >>> ids.tolist(), n, rows.width
        ([3, 0], 1, 2)
    """

    vocabulary: Vocabulary
    tokens: np.ndarray  #: int32 (total tokens,)
    offsets: np.ndarray  #: int64 (N + 1,): text i is tokens[offsets[i]:offsets[i + 1]]
    width: int  #: T, the padded length

    @classmethod
    def encode(cls, vocabulary: Vocabulary, texts: Sequence[str], *, chunk: int = 8192) -> "TokenRows":
        """Every text encoded; ``width`` is the longest."""
        flat, lengths = [np.zeros(0, dtype=np.int32)], [np.zeros(0, dtype=np.int64)]
        for start in range(0, len(texts), chunk):
            ids, n = vocabulary.encode(texts[start:start + chunk])
            flat.append(ids[torch.arange(ids.shape[1]) < n[:, None]].numpy().astype(np.int32))
            lengths.append(n.numpy())
        counts = np.concatenate(lengths)
        return cls(vocabulary, np.concatenate(flat), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   int(counts.max(initial=0)))

    def select(self, keep: np.ndarray) -> "TokenRows":
        """The texts at the sorted indices ``keep``, padded to the same ``width``."""
        counts = np.diff(self.offsets)
        chosen = np.zeros(len(counts), dtype=bool)
        chosen[keep] = True
        return TokenRows(self.vocabulary, self.tokens[np.repeat(chosen, counts)],
                         np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64), self.width)

    def row(self, i: int) -> tuple[np.ndarray, int]:
        """Text ``i``'s ids right-padded with 0, int64 (width,), and its length."""
        row = self.tokens[self.offsets[i]:self.offsets[i + 1]]
        ids = np.zeros(self.width, dtype=np.int64)
        ids[:len(row)] = row
        return ids, len(row)
