"""Loading a task's examples with ``datasets``: local files and directories, or hub datasets.

A task's ``data`` is either a local path — a JSONL/JSON/parquet/CSV file, or a directory
(``datasets`` infers the format: data files, or an image folder with class sub-directories
and/or a ``metadata.jsonl``) — or a hub dataset id (``juletxara/mgsm``) with an optional
config (``ja``), loaded with the hub's own column schema. While ``HF_DATASETS_OFFLINE`` or
``HF_HUB_OFFLINE`` is set, a hub id fails at once with an :class:`~evomm.errors.OfflineError`
that says how to point the task at local files.

Example:
    >>> from evomm.data import load_examples
    >>> ds = load_examples("fixtures/mgsm_ja.jsonl", split="test")   # doctest: +SKIP
    >>> ds.column_names                                             # doctest: +SKIP
    ['question', 'answer', 'answer_number', 'equation_solution']
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from evomm.errors import OfflineError, TaskError
from evomm.hub import is_offline

if TYPE_CHECKING:
    import datasets

#: File suffix -> ``datasets`` packaged builder.
FILE_FORMATS = {
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".arrow": "arrow",
}


def looks_like_path(source: str) -> bool:
    """True when ``source`` is meant as a local path (exists, or has a path-like form)."""
    p = Path(source).expanduser()
    return (
        p.exists()
        or source.startswith((".", "/", "~"))
        or p.suffix.lower() in FILE_FORMATS
        or "\\" in source
        or source.count("/") > 1
    )


def describe_source(source: str | None, config: str | None = None) -> str:
    """A short description for listings: ``local file x.jsonl`` or ``hub juletxara/mgsm (ja)``."""
    if not source:
        return "(none: give data=...)"
    if looks_like_path(source):
        return f"local {source}"
    return f"hub {source}" + (f" ({config})" if config else "")


def _pick_split(dd: datasets.DatasetDict, split: str, source: str) -> datasets.Dataset:
    if split in dd:
        return dd[split]
    if len(dd) == 1:  # a single file or folder is the split the task asked for
        return next(iter(dd.values()))
    raise TaskError(f"data {source!r} has splits {sorted(dd)}, not {split!r}; set the task's split to one of them")


def load_local(path: str | Path, *, split: str = "test", format: str | None = None) -> datasets.Dataset:
    """Load a local file or directory as one split.

    Args:
        path: a ``.jsonl``/``.json``/``.parquet``/``.csv``/``.arrow`` file, or a directory.
        split: the split to return when a directory holds several (``test.jsonl``,
            ``train/``...); a single file or an unsplit directory is returned whatever ``split`` is.
        format: force a ``datasets`` builder (``json``, ``parquet``, ``csv``, ``imagefolder``).

    Returns:
        A ``datasets.Dataset``.

    Raises:
        TaskError: the path is missing or its format unknown.

    Example:
        >>> load_local("shapes/", format="imagefolder")["label"][:3]   # doctest: +SKIP
    """
    import datasets

    p = Path(path).expanduser()
    if not p.exists():
        raise TaskError(f"data file {str(path)!r} does not exist; give an existing file or directory")
    if p.is_file():
        builder = format or FILE_FORMATS.get(p.suffix.lower())
        if builder is None:
            raise TaskError(
                f"data file {str(path)!r} has an unknown format {p.suffix!r}; use one of "
                f"{sorted(FILE_FORMATS)} or set format"
            )
        dd = datasets.load_dataset(builder, data_files={split: str(p)})
    elif format:
        dd = datasets.load_dataset(format, data_dir=str(p))
    else:
        dd = datasets.load_dataset(str(p))
    return _pick_split(dd, split, str(path))


def load_hub(name: str, *, config: str | None = None, split: str = "test") -> datasets.Dataset:
    """Load ``split`` of a hub dataset (online only), with the hub's own columns.

    Raises:
        OfflineError: offline mode is on (at once, no network attempt).
        TaskError: the dataset, config or split cannot be loaded.
    """
    if is_offline("datasets"):
        cfg = f" (config {config!r})" if config else ""
        raise OfflineError(
            f"data {name!r}{cfg} is a hub dataset, but HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set; "
            f"download it elsewhere and point the task at local files in the same schema: in the "
            f"evolve recipe, `tasks: {{TASK: {{data: path/to/file.jsonl}}}}` (`evomm tasks TASK` shows "
            f"where a task reads by default)"
        )
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # the library's many error types: name, config, split or network
        raise TaskError(
            f"cannot load hub dataset {name!r} config={config!r} split={split!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def load_examples(
    source: str | Path | None,
    *,
    split: str = "test",
    config: str | None = None,
    format: str | None = None,
) -> datasets.Dataset:
    """Load a task's examples from a local path or a hub dataset id.

    Args:
        source: local file/directory, or a hub dataset id.
        split: split to load (``test``, ``validation``...).
        config: hub dataset configuration (``ja`` for ``juletxara/mgsm``); ignored for files.
        format: force a ``datasets`` builder for local data.

    Returns:
        A ``datasets.Dataset`` with the source's own columns.

    Raises:
        TaskError: no source, a missing file or an unloadable dataset.
        OfflineError: a hub id while offline.

    Example:
        >>> load_examples("juletxara/mgsm", config="ja", split="test")   # doctest: +SKIP
    """
    if source is None or str(source) == "":
        raise TaskError("the task has no data: set `data: path/to/file.jsonl` (or a hub dataset id)")
    text = str(source)
    if looks_like_path(text):
        return load_local(text, split=split, format=format)
    return load_hub(text, config=config, split=split)
