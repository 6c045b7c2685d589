"""The DocQA corpus: one document per public module, class and function of the standard library.

Built deterministically with ``inspect`` from a fixed list of pure, import-safe stdlib modules
of the running interpreter: id = qualified name, title = qualified name, text = signature
(with defaults) and the docstring. Cached as JSON (atomically) keyed by the Python version.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from unimask.io import atomic_write_text

MODULES = [
    "abc", "argparse", "ast", "base64", "bisect", "bz2", "calendar", "cmd", "code", "codecs", "colorsys",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "doctest", "email.utils", "enum", "filecmp", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.cookies",
    "imaplib", "inspect", "ipaddress", "json", "keyword", "linecache", "locale", "logging", "lzma",
    "mimetypes", "netrc", "numbers", "operator", "optparse", "os.path", "pathlib", "pickle", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "profile", "pstats", "queue", "quopri", "random", "reprlib",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socketserver", "statistics",
    "string", "stringprep", "struct", "subprocess", "symtable", "sysconfig", "tabnanny", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "token", "tokenize", "trace", "traceback", "types",
    "typing", "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zipimport",
]


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _stable(text: str) -> str:
    """Drop memory addresses from reprs (``<object object at 0x7f...>``): they change every run."""
    return _ADDRESS.sub("", text)


def _signature(obj: Any) -> str | None:
    try:
        return _stable(str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return None


def _doc(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip()


def _entry(kind: str, qual: str, module: str, obj: Any) -> dict[str, Any]:
    sig = _signature(obj) if kind != "module" else None
    doc = _doc(obj)
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip() if doc else ""
    params = []
    if sig is not None and kind in ("function", "method"):
        try:
            for p in inspect.signature(obj).parameters.values():
                if p.name in ("self", "cls"):
                    continue
                default = None if p.default is inspect.Parameter.empty else _stable(repr(p.default))
                params.append({"name": p.name, "default": default, "kind": p.kind.name})
        except (TypeError, ValueError):
            params = []
    head = f"{qual}{sig}" if sig is not None else qual
    return {"id": qual, "title": qual, "kind": kind, "module": module, "signature": head,
            "summary": summary, "params": params, "text": f"{head}\n{doc}".strip()}


def build_corpus(modules: list[str] | None = None) -> list[dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for name in modules or MODULES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                mod = importlib.import_module(name)
            except Exception:  # a module missing on this build is skipped, not fatal
                continue
        docs[name] = _entry("module", name, name, mod)
        real = getattr(mod, "__name__", name)
        for attr in sorted(vars(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr)
            if getattr(obj, "__module__", None) not in (real, name):
                continue
            if inspect.isfunction(obj) or inspect.isbuiltin(obj):
                docs[f"{name}.{attr}"] = _entry("function", f"{name}.{attr}", name, obj)
            elif inspect.isclass(obj):
                docs[f"{name}.{attr}"] = _entry("class", f"{name}.{attr}", name, obj)
                for meth in sorted(vars(obj)):
                    if meth.startswith("_"):
                        continue
                    fn = vars(obj)[meth]
                    if inspect.isfunction(fn):
                        q = f"{name}.{attr}.{meth}"
                        docs[q] = _entry("method", q, name, fn)
    return [docs[k] for k in sorted(docs)]


def load_corpus(cache_dir: Path) -> list[dict[str, Any]]:
    """The corpus for this interpreter, built once and cached at ``cache_dir``."""
    tag = f"v2-py{sys.version_info.major}{sys.version_info.minor}"  # v2: reprs without memory addresses
    path = Path(cache_dir) / f"docqa-corpus-{tag}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    docs = build_corpus()
    atomic_write_text(path, json.dumps(docs, ensure_ascii=False))
    return docs
