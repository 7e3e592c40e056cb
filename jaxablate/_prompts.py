"""A batch of right-padded prompts: token ids, lengths, answers and named positions.

:class:`Prompts` is what every API that takes ``tokens`` also takes. Right padding is exact for
causal models (a real token never attends to a later pad), and nothing in jaxablate reads a pad
position: metrics score each example at its own positions, mean ablation averages real positions
only, and all-position metrics (loss, accuracy, KL) skip pads.

Build one from text with :func:`jaxablate.prompts` (tokenizer + strings), or directly from ids.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Int

#: Token value that marks a pad position in the tokens a metric receives (never fed to a model).
PAD = -1


def _int_vector(name: str, value: object, batch: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(
            f"Prompts.{name} must be 1-D with one entry per prompt ({batch}), got shape "
            f"{tuple(arr.shape)}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"Prompts.{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"Prompts.{name} must be non-negative, got {int(arr.min())}")
    return arr.astype(np.int32)


@dataclass(frozen=True)
class Prompts:
    """Right-padded prompts (and, optionally, their answers and counterfactuals).

    Attributes:
        tokens: ``int32 [batch, seq]`` ids; positions ``>= lengths[i]`` of row ``i`` hold
            ``pad_id``.
        lengths: ``int32 [batch]`` real tokens of each prompt (``1 <= length <= seq``).
        correct: ``int32 [batch]`` id of each prompt's correct answer token, or ``None``.
        wrong: ``int32 [batch]`` id of each prompt's competing answer token, or ``None``.
        corrupted: The paired counterfactual prompts (same shape and lengths: position ``t`` of
            a corrupted prompt is aligned with position ``t`` of its clean one), or ``None``.
        positions: Named positions, ``name -> int32 [batch]`` (e.g. ``{"S2": ...}`` for the
            second mention of the subject); ``"last"`` is always ``lengths - 1`` and need not be
            listed.
        texts: The strings the prompts were tokenized from, if any.
        pad_id: The id written at pad positions (a valid vocabulary id; never read).
    """

    tokens: Int[np.ndarray, "batch seq"]
    lengths: Int[np.ndarray, " batch"]
    correct: Int[np.ndarray, " batch"] | None = None
    wrong: Int[np.ndarray, " batch"] | None = None
    corrupted: "Prompts | None" = None
    positions: Mapping[str, Int[np.ndarray, " batch"]] = field(default_factory=dict)
    texts: tuple[str, ...] | None = None
    pad_id: int = 0

    def __post_init__(self) -> None:
        tokens = np.asarray(self.tokens)
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(
                f"Prompts.tokens must be a non-empty 2-D [batch, seq] array, got shape "
                f"{tuple(tokens.shape)}"
            )
        if tokens.dtype == np.bool_ or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"Prompts.tokens must hold integer ids, got dtype {tokens.dtype}")
        batch, seq = tokens.shape
        lengths = _int_vector("lengths", self.lengths, batch)
        if lengths.min() < 1 or lengths.max() > seq:
            raise ValueError(
                f"Prompts.lengths must lie in [1, {seq}] (the padded length), got values in "
                f"[{lengths.min()}, {lengths.max()}]"
            )
        if tokens.min() < 0:
            raise ValueError(f"Prompts.tokens must be non-negative ids, got {int(tokens.min())}")
        if (
            not isinstance(self.pad_id, int | np.integer)
            or isinstance(self.pad_id, bool)
            or self.pad_id < 0
        ):
            raise ValueError(f"Prompts.pad_id must be a non-negative int id, got {self.pad_id!r}")
        object.__setattr__(self, "tokens", tokens.astype(np.int32))
        object.__setattr__(self, "lengths", lengths)
        for name in ("correct", "wrong"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _int_vector(name, value, batch))
        self._check_positions(batch)
        self._check_corrupted()
        if self.texts is not None:
            texts = tuple(self.texts)
            if len(texts) != batch or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"Prompts.texts must be {batch} strings, got {self.texts!r}")
            object.__setattr__(self, "texts", texts)

    def _check_positions(self, batch: int) -> None:
        checked = {}
        for name, value in dict(self.positions).items():
            if not isinstance(name, str) or not name or name == "last":
                raise ValueError(
                    f"Prompts.positions names must be non-empty strings other than 'last' "
                    f"(always lengths - 1), got {name!r}"
                )
            pos = _int_vector(f"positions[{name!r}]", value, batch)
            bad = np.flatnonzero((pos < 0) | (pos >= self.lengths))
            if bad.size:
                i = int(bad[0])
                raise ValueError(
                    f"Prompts.positions[{name!r}] must lie inside each prompt; prompt {i} has "
                    f"{int(self.lengths[i])} tokens, position {int(pos[i])} was given"
                )
            checked[name] = pos
        object.__setattr__(self, "positions", checked)

    def _check_corrupted(self) -> None:
        c = self.corrupted
        if c is None:
            return
        if not isinstance(c, Prompts):
            raise ValueError(f"Prompts.corrupted must be Prompts or None, got {type(c).__name__}")
        if c.tokens.shape != self.tokens.shape or not np.array_equal(c.lengths, self.lengths):
            same = c.lengths.shape == self.lengths.shape
            diff = np.flatnonzero(c.lengths != self.lengths) if same else []
            where = f"; first differing pair: {int(diff[0])}" if len(diff) else ""
            raise ValueError(
                "clean and corrupted prompts must align position by position (same padded "
                f"shape and the same length per pair), got shapes {self.tokens.shape} and "
                f"{c.tokens.shape}{where}"
            )

    @property
    def batch(self) -> int:
        """Number of prompts."""
        return int(self.tokens.shape[0])

    @property
    def seq(self) -> int:
        """Padded length."""
        return int(self.tokens.shape[1])

    def __len__(self) -> int:
        return self.batch

    @property
    def last(self) -> Int[np.ndarray, " batch"]:
        """Each prompt's last real position (``lengths - 1``)."""
        return self.lengths - 1

    @property
    def valid(self) -> np.ndarray:
        """``bool [batch, seq]``: True at real (non-pad) positions."""
        return np.arange(self.seq)[None, :] < self.lengths[:, None]

    @property
    def ragged(self) -> bool:
        """Whether some prompt is shorter than the padded length."""
        return bool((self.lengths < self.seq).any())

    def position(self, spec: int | str) -> Int[np.ndarray, " batch"]:
        """Per-prompt indices of a position spec: ``"last"``, a name in :attr:`positions`, or an
        int (negative ones count back from each prompt's own end, ``-1`` = ``"last"``).

        Raises:
            ValueError: an unknown name, or an int outside some prompt.
        """
        if isinstance(spec, str):
            if spec == "last":
                return self.last
            if spec not in self.positions:
                raise ValueError(
                    f"unknown position {spec!r}: the prompts name {['last', *self.positions]}"
                )
            return self.positions[spec]
        if not isinstance(spec, int | np.integer) or isinstance(spec, bool):
            raise ValueError(f"a position must be an int or a name, got {spec!r}")
        pos = np.where(spec < 0, self.lengths + int(spec), int(spec)).astype(np.int32)
        bad = np.flatnonzero((pos < 0) | (pos >= self.lengths))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"position {int(spec)} lies outside prompt {i}, which has "
                f"{int(self.lengths[i])} tokens"
            )
        return pos

    def metric_tokens(self) -> Int[np.ndarray, "batch seq"]:
        """The tokens a metric receives: pad positions set to :data:`PAD` (-1)."""
        return np.where(self.valid, self.tokens, PAD).astype(np.int32)
