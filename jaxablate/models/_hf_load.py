"""Where Hugging Face weights come from: safetensors files, ``transformers`` objects, the Hub.

Tensors are read lazily, one at a time (:class:`SafetensorsDirectory` reads each from its file
when asked, into a fresh buffer: no memory map stays resident), so a loader can stream them into
its destinations. Reading a directory imports neither torch nor transformers; a Hub id is
resolved with ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE``.
"""

import json
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

#: safetensors dtype names -> numpy dtypes (``BF16`` via ml_dtypes, as jax uses).
_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}

#: Files fetched for a Hub id: config, weights, and the tokenizer.
HUB_PATTERNS = [
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
]

#: ``name`` or ``org/name``: letters, digits, ``-``, ``_``, ``.`` (no ``--`` or ``..``).
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")


def _header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where its data starts."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise ValueError(f"{path} is not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a safetensors file (bad header: {err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    return header, 8 + size


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, else ``ValueError`` naming the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text, so not valid JSON ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the file is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_finite(where: str, name: str, value: np.ndarray) -> np.ndarray:
    """``value`` if it holds no NaN or inf, else ``ValueError`` naming ``where`` and ``name``."""
    if value.dtype.kind not in "fcV":
        return value
    flat = value.reshape(-1)
    step = 1 << 22  # bounded scratch memory: a few MiB of flags at a time
    bad = sum(int((~np.isfinite(flat[i : i + step])).sum()) for i in range(0, flat.size, step))
    if bad:
        raise ValueError(
            f"{where}: tensor {name} holds {bad} NaN/inf values (of {value.size}); the "
            "checkpoint is damaged"
        )
    return value


class SafetensorsDirectory(Mapping[str, np.ndarray]):
    """The tensors of safetensors files, by name; each read from disk when it is looked up.

    Args:
        files: The files (shards) of one checkpoint.

    Raises:
        ValueError: a file that is not safetensors, a tensor in two files, or a dtype numpy
            cannot hold (named).
    """

    def __init__(self, files: list[Path]):
        self._where: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for path in files:
            header, start = _header(path)
            for name, info in header.items():
                if name in self._where:
                    raise ValueError(f"tensor {name} is stored twice ({path} and another file)")
                self._where[name] = (path, start, info)

    def __getitem__(self, name: str) -> np.ndarray:
        path, start, info = self._where[name]
        kind = info["dtype"]
        if kind not in _DTYPES:
            raise ValueError(
                f"tensor {name} in {path} has dtype {kind} (supported: {sorted(_DTYPES)})"
            )
        begin, end = info["data_offsets"]
        buffer = np.empty(end - begin, np.uint8)
        with path.open("rb") as f:
            f.seek(start + begin)
            if f.readinto(buffer.data) != end - begin:
                raise ValueError(f"tensor {name} in {path} is truncated")
        try:
            value = buffer.view(_DTYPES[kind]).reshape(info["shape"])
        except ValueError:
            raise ValueError(
                f"{path}: tensor {name} holds {end - begin} bytes, which is not the {kind} "
                f"shape {info['shape']} its header gives"
            ) from None
        return check_finite(str(path), name, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class TorchStateDict(Mapping[str, np.ndarray]):
    """A ``transformers`` model's ``state_dict`` as numpy, converted one tensor at a time.

    bfloat16 tensors become ``ml_dtypes.bfloat16`` arrays bit for bit (no float32 copy).
    """

    def __init__(self, model: Any):
        self._state = model.state_dict()

    def __getitem__(self, name: str) -> np.ndarray:
        import torch

        t = self._state[name].detach().cpu()
        if t.dtype == torch.bfloat16:
            value = t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            value = t.numpy()
        return check_finite("the transformers model", name, value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)


def read_directory(path: str | os.PathLike) -> tuple[SafetensorsDirectory, dict[str, Any]]:
    """Tensors (read lazily) and config of a local checkpoint directory; never downloads.

    Raises:
        ValueError: not a directory, no ``config.json``, or no safetensors weights.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{root} has no config.json")
    hf_config = read_json_object(config_file)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' object (tensor name -> file)")
        files = sorted(set(map(str, weight_map.values())))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        found = sorted(p.name for p in root.iterdir())
        raise ValueError(
            f"{root} has neither model.safetensors nor model.safetensors.index.json "
            f"(found {found}); save the model with save_pretrained(safe_serialization=True)"
        )
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise ValueError(f"{root}: shards {missing} named in the index are missing")
    return SafetensorsDirectory([root / name for name in files]), hf_config


def resolve(
    source: str | os.PathLike, revision: str | None, *, patterns: Sequence[str] = HUB_PATTERNS
) -> Path:
    """The local directory for ``source``: itself if it is one, else a Hub snapshot.

    Args:
        source: A directory, or a Hub repo id (``"org/name"``). A ``PathLike`` is never a
            repo id.
        revision: Branch, tag or commit of a Hub id (``None``: ``main``).
        patterns: Which files of a Hub repo to fetch (default: config, weights, tokenizer).

    Raises:
        ValueError: neither an existing directory nor a valid repo id; a Hub id that is not in
            the local cache while offline (``HF_HUB_OFFLINE=1``) or when the Hub is unreachable;
            ``revision`` given with a directory.
    """
    path = Path(source)
    if path.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to Hub ids, not to directory {path}")
        return path
    text = os.fspath(source)
    if not isinstance(source, str) or not _REPO_ID.fullmatch(text) or ".." in text or "--" in text:
        raise ValueError(
            f"{text!r} is not a directory, nor a Hugging Face Hub repo id ('org/name')"
        )
    return _download(text, revision, patterns)


def _download(repo_id: str, revision: str | None, patterns: Sequence[str]) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    where = f"{repo_id!r}" + ("" if revision is None else f" at revision {revision!r}")
    try:
        snapshot = snapshot_download(
            repo_id, revision=revision, allow_patterns=list(patterns), etag_timeout=5
        )
    except LocalEntryNotFoundError as error:
        reason = (
            "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        )
        raise ValueError(
            f"Hub model {where} is not in the local cache ({constants.HF_HUB_CACHE}) and "
            f"{reason}: download it once with network access, or give a local directory"
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise ValueError(f"could not fetch Hub model {where}: {error}") from error
    return Path(snapshot)
