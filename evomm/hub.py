"""Where a model named in a recipe lives on disk: a local directory, or a Hugging Face hub id.

A local ``.gguf`` file (or a directory holding one and no ``config.json``) resolves to its
dequantised copy in evomm's cache (:mod:`evomm.gguf`).

Offline (``HF_HUB_OFFLINE=1``, as tests and air-gapped machines run) a hub id that is not in the
local cache fails at once with :class:`~evomm.errors.OfflineError`; nothing ever waits on the
network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from evomm.adapters import ModelRef
from evomm.errors import CheckpointError, OfflineError
from evomm.gguf import dequantized_dir, find_gguf

# A hub id is "name" or "org/name" made of [A-Za-z0-9._-]; anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


#: The variables that forbid downloads, per kind of download, as the Hugging Face libraries
#: read them (transformers: ``TRANSFORMERS_OFFLINE``, datasets: ``HF_DATASETS_OFFLINE``).
OFFLINE_VARIABLES: dict[str, tuple[str, ...]] = {
    "models": ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"),
    "datasets": ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"),
}


def is_offline(what: Literal["models", "datasets"] = "models") -> bool:
    """Whether the hub must not be contacted for ``what``: one of its
    :data:`OFFLINE_VARIABLES` is set to a true value (``1``, ``true``, ``yes``, ``on``).
    :func:`resolve_model_dir` asks for ``"models"``, :func:`evomm.data.load_hub` for
    ``"datasets"``.
    """
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES[what])


def looks_local(path: str) -> bool:
    """Whether ``path`` is meant as a local path rather than a hub id.

    Absolute paths, ``./``, ``../``, ``~``, backslashes and anything with more than one ``/`` are
    local; so is a name that exists on disk.
    """
    return (
        Path(path).expanduser().exists()
        or path.startswith(("/", "./", "../", "~", "."))
        or "\\" in path
        or not _HUB_ID.match(path)
    )


def resolve_model_dir(ref: ModelRef) -> Path:
    """A local directory holding the model ``ref`` names.

    Args:
        ref: the model; ``ref.path`` is a local directory or a hub id (``org/name``),
            ``ref.revision`` a hub revision.

    Returns:
        The directory (for a hub id: the snapshot in the Hugging Face cache; for a GGUF file:
        its dequantised checkpoint, :func:`evomm.gguf.dequantized_dir`).

    Raises:
        CheckpointError: a local-looking path that does not exist or is not a directory.
        OfflineError: a hub id while offline that is not in the local cache.

    Example:
        >>> resolve_model_dir(ModelRef("a", "./models/tiny-llama"))      # doctest: +SKIP
        PosixPath('models/tiny-llama')
    """
    p = Path(ref.path).expanduser()
    if looks_local(ref.path):
        if not p.exists():
            raise CheckpointError(
                f"model {ref.name!r}: local path {ref.path!r} does not exist; check its `model:` (merge "
                "recipe) or `path:` (evolve recipe) entry; a relative path is read from the recipe's directory "
                "when it exists there, else from the current directory"
            )
        gguf_file = find_gguf(p)
        if gguf_file is not None:
            return dequantized_dir(gguf_file, model=ref.name)
        if not p.is_dir():
            raise CheckpointError(
                f"model {ref.name!r}: {ref.path!r} is a file; give the checkpoint's directory "
                "(the one holding config.json) or a .gguf file"
            )
        return p
    return _snapshot(ref)


def _snapshot(ref: ModelRef) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    if ref.allow_pickle:
        patterns.append("*.bin")
    offline = is_offline()
    try:
        return Path(
            snapshot_download(
                ref.path, revision=ref.revision, allow_patterns=patterns, local_files_only=offline
            )
        )
    except LocalEntryNotFoundError as exc:
        if offline:
            raise OfflineError(
                f"model {ref.name!r}: hub id {ref.path!r} is not in the local Hugging Face cache and "
                "HF_HUB_OFFLINE=1 forbids downloading it; download it on a machine with network "
                f"(`huggingface-cli download {ref.path} --local-dir DIR`) and give that local path instead of the hub id "
                "(`model: DIR` in a merge recipe, `path: DIR` in an evolve recipe), or unset HF_HUB_OFFLINE"
            ) from None
        raise CheckpointError(f"model {ref.name!r}: cannot fetch {ref.path!r} from the hub: {exc}") from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"model {ref.name!r}: cannot fetch hub id {ref.path!r} (revision {ref.revision or 'main'}): "
            f"{type(exc).__name__}: {exc}; check the name, or give a local directory"
        ) from exc
