"""Corpus sources: each yields ``Document(text, origin)`` in a deterministic order.

Bad input never crashes a run silently: files that are not UTF-8 are skipped and counted in
``SourceCounts``; a missing path, unreadable JSONL line or absent text field raises
``DataError`` naming the file and the fix.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from pydoc_data.topics import topics

from unimask.data.config import SourceConfig


class DataError(ValueError):
    """Bad data input or a damaged/mismatched data directory; the message says how to fix it."""


@dataclass
class Document:
    text: str
    origin: str  # file path (and line/row) the text came from


@dataclass
class SourceCounts:
    """What reading one source saw; written to meta.json."""

    files: int = 0
    docs_read: int = 0
    non_utf8_skipped: int = 0
    empty_skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)  # first few non-UTF-8 paths, for the log

    def skip_non_utf8(self, path: Path) -> None:
        self.non_utf8_skipped += 1
        if len(self.skipped_files) < 10:
            self.skipped_files.append(str(path))


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_third_party(path: Path) -> bool:
    return "site-packages" in path.parts or "dist-packages" in path.parts


def _spread(paths: list[Path], root: Path, max_docs: int | None) -> list[Path]:
    """All of ``paths`` (sorted), or an even, machine-independent subset of ``max_docs`` of them.

    The subset is the paths with the smallest hash of their path relative to ``root``: a quick
    run sees a spread over the whole tree instead of the alphabetically first package.
    """
    paths = sorted(paths)
    if max_docs is None or len(paths) <= max_docs:
        return paths

    def key(p: Path) -> str:
        return hashlib.blake2b(p.relative_to(root).as_posix().encode(), digest_size=8).hexdigest()

    return sorted(sorted(paths, key=key)[:max_docs])


def _read_text(path: Path, counts: SourceCounts) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        counts.skip_non_utf8(path)
        return None


def _files(src: SourceConfig, default_pattern: str) -> tuple[Path, list[Path]]:
    if src.path is None:
        raise DataError(f"source {src.name!r} needs a path")
    root = Path(src.path).expanduser()
    if not root.exists():
        raise DataError(f"source {src.name!r}: path {root} does not exist; fix `path` in the data config")
    if root.is_file():
        return root.parent, [root]
    files = [p for p in root.glob(src.pattern or default_pattern) if p.is_file()]
    if not files:
        raise DataError(
            f"source {src.name!r}: no files match {src.pattern or default_pattern!r} under {root}; "
            "fix `pattern` or `path`"
        )
    return root, files


def _stdlib_files(src: SourceConfig, max_docs: int | None) -> tuple[Path, list[Path]]:
    root = Path(src.path).expanduser() if src.path else stdlib_dir()
    if not root.is_dir():
        raise DataError(f"source {src.name!r}: stdlib directory {root} does not exist")
    files = [p for p in root.glob(src.pattern or "**/*.py") if p.is_file() and not _is_third_party(p.relative_to(root))]
    return root, _spread(files, root, max_docs)


def iter_stdlib_code(src: SourceConfig, counts: SourceCounts, max_docs: int | None) -> Iterator[Document]:
    root, files = _stdlib_files(src, max_docs)
    for path in files:
        counts.files += 1
        text = _read_text(path, counts)
        if text is not None:
            yield Document(text, str(path))


def docstrings_of(source: str, module_name: str) -> str:
    """Module, class and function docstrings of Python ``source`` as one natural-language text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    parts: list[str] = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(f"Module {module_name}\n\n{doc}")

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    what = "class" if isinstance(child, ast.ClassDef) else "function"
                    parts.append(f"{name} ({what})\n\n{doc}")
                if isinstance(child, ast.ClassDef):
                    visit(child, name + ".")

    visit(tree, module_name + ".")
    return "\n\n".join(parts)


def iter_stdlib_docs(src: SourceConfig, counts: SourceCounts, max_docs: int | None) -> Iterator[Document]:
    """pydoc topics (one document each), then one document of docstrings per stdlib module."""
    names = sorted(topics)
    if max_docs is not None and len(names) > max_docs // 2:
        keep = max_docs // 2
        names = sorted(sorted(names, key=lambda n: hashlib.blake2b(n.encode(), digest_size=8).digest())[:keep])
    for name in names:
        yield Document(topics[name], f"pydoc_data.topics:{name}")
    n_modules = None if max_docs is None else max_docs - len(names)
    root, files = _stdlib_files(src, None)
    files = _spread(files, root, n_modules * 2 if n_modules is not None else None)  # some have no docstrings
    emitted = 0
    for path in files:
        if n_modules is not None and emitted >= n_modules:
            break
        counts.files += 1
        text = _read_text(path, counts)
        if text is None:
            continue
        rel = path.relative_to(root).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__") or rel.name
        doc = docstrings_of(text, module)
        if doc:
            emitted += 1
            yield Document(doc, str(path))


def iter_glob(src: SourceConfig, counts: SourceCounts, max_docs: int | None) -> Iterator[Document]:
    root, files = _files(src, "**/*")
    for path in _spread(files, root, max_docs):
        counts.files += 1
        text = _read_text(path, counts)
        if text is not None:
            yield Document(text, str(path))


def _text_of(record: object, src: SourceConfig, where: str) -> str:
    if not isinstance(record, dict) or src.text_field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where}: no field {src.text_field!r} (found {keys}); set `text_field` of source {src.name!r}")
    value = record[src.text_field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {src.text_field!r} is {type(value).__name__}, expected a string")
    return value


def iter_jsonl(src: SourceConfig, counts: SourceCounts, max_docs: int | None) -> Iterator[Document]:
    _, files = _files(src, "**/*.jsonl")
    emitted = 0
    for path in sorted(files):
        counts.files += 1
        try:
            lines = path.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError:
            counts.skip_non_utf8(path)
            continue
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e}); each line must be one JSON object") from None
            yield Document(_text_of(record, src, f"{path}:{lineno}"), f"{path}:{lineno}")
            emitted += 1
            if max_docs is not None and emitted >= max_docs:
                return


def _iter_table(table: object, src: SourceConfig, path: Path, max_docs: int | None, emitted: int) -> Iterator[Document]:
    names = table.column_names  # type: ignore[attr-defined]
    if src.text_field not in names:
        raise DataError(f"{path}: no column {src.text_field!r} (columns: {names}); set `text_field` of source {src.name!r}")
    for row, value in enumerate(table.column(src.text_field).to_pylist()):  # type: ignore[attr-defined]
        if max_docs is not None and emitted >= max_docs:
            return
        if not isinstance(value, str):
            raise DataError(f"{path} row {row}: column {src.text_field!r} holds {type(value).__name__}, expected string")
        emitted += 1
        yield Document(value, f"{path}#{row}")


def iter_parquet(src: SourceConfig, counts: SourceCounts, max_docs: int | None) -> Iterator[Document]:
    import pyarrow.parquet as pq  # only parquet sources need pyarrow, which is slow to import

    _, files = _files(src, "**/*.parquet")
    emitted = 0
    for path in sorted(files):
        counts.files += 1
        try:
            table = pq.read_table(path, columns=None)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a damaged file
            raise DataError(f"{path}: cannot read parquet ({e})") from None
        for doc in _iter_table(table, src, path, max_docs, emitted):
            emitted += 1
            yield doc


def _read_arrow(path: Path) -> object:
    import pyarrow as pa  # as above

    with pa.memory_map(str(path)) as f:
        try:
            return pa.ipc.open_stream(f).read_all()
        except pa.ArrowInvalid:
            f.seek(0)
            return pa.ipc.open_file(f).read_all()


def iter_hf_dataset(src: SourceConfig, counts: SourceCounts, max_docs: int | None) -> Iterator[Document]:
    """A directory written by ``datasets`` ``save_to_disk`` (Arrow files + state.json), read with pyarrow.

    A ``DatasetDict`` directory (``dataset_dict.json`` and one sub-directory per split) is read
    at ``src.split``. Parquet/JSONL files in the directory (a hub-style dataset repo) work too.
    """
    root = Path(src.path or "").expanduser()
    if not root.is_dir():
        raise DataError(f"source {src.name!r}: dataset directory {root} does not exist")
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        if src.split not in splits:
            raise DataError(f"source {src.name!r}: split {src.split!r} not in {root} (splits: {splits}); set `split`")
        root = root / src.split
    if (root / "state.json").is_file():
        state = json.loads((root / "state.json").read_text())
        files = [root / f["filename"] for f in state.get("_data_files", [])]
    else:
        files = sorted(root.glob("**/*.arrow"))
    emitted = 0
    if files:
        for path in files:
            counts.files += 1
            for doc in _iter_table(_read_arrow(path), src, path, max_docs, emitted):
                emitted += 1
                yield doc
        return
    parquet, jsonl = sorted(root.glob("**/*.parquet")), sorted(root.glob("**/*.jsonl"))
    if parquet:
        yield from iter_parquet(SourceConfig(**{**src.__dict__, "kind": "parquet", "path": str(root)}), counts, max_docs)
    elif jsonl:
        yield from iter_jsonl(SourceConfig(**{**src.__dict__, "kind": "jsonl", "path": str(root)}), counts, max_docs)
    else:
        raise DataError(
            f"source {src.name!r}: {root} holds no dataset (expected state.json + *.arrow from save_to_disk, "
            "or *.parquet / *.jsonl files)"
        )


READERS = {
    "stdlib_code": iter_stdlib_code,
    "stdlib_docs": iter_stdlib_docs,
    "glob": iter_glob,
    "jsonl": iter_jsonl,
    "parquet": iter_parquet,
    "hf_dataset": iter_hf_dataset,
}


def iter_source(src: SourceConfig, counts: SourceCounts, max_docs: int | None = None) -> Iterator[Document]:
    """Documents of one source, in a deterministic order, at most ``max_docs`` of them."""
    emitted = 0
    for doc in READERS[src.kind](src, counts, max_docs):
        counts.docs_read += 1
        yield doc
        emitted += 1
        if max_docs is not None and emitted >= max_docs:
            return
