"""Reading and writing the command line's files, with every check done before any computation.

Every problem a user can cause (a missing, unreadable, empty or corrupt file, a
wrong shape or dtype, text in a numeric table, labels of the wrong length, an
output format reprkit cannot write) raises :class:`UsageError` with a one-line
message naming the file and what is accepted; the command line turns it into
exit status 2. Shared by every subcommand (``reprkit tsne``, ``reprkit eval``).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np

LABEL_KEYS = ("labels", "label", "y", "target", "targets")
DATA_KEYS = ("X", "x", "data", "embeddings", "embedding", "features")
INPUT_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt", ".pt", ".pth")
OUTPUT_SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt", ".pt")
#: Candidate field separators of a text table, in order of preference.
DELIMITERS = (",", "\t", ";", "|")
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": None, "whitespace": None}
_SNIFF_LINES = 50


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit status 2, never a traceback."""


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _readable(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} file not found: {path}")
    if p.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror or _one_line(e)}") from None
    if not head:
        raise UsageError(f"{what} {path} is empty")
    return p


def parse_delimiter(text: Optional[str]) -> Any:
    """``--delimiter`` value → the separator: one character, or tab/comma/semicolon/space/whitespace (None = any whitespace)."""
    if text is None:
        return "auto"
    if text.lower() in _DELIMITER_NAMES:
        return _DELIMITER_NAMES[text.lower()]
    if len(text) != 1 or text in "\n\r\"'#" or text.isalnum() or text in ".-+":
        raise UsageError(
            f"--delimiter {text!r}: give one separator character (such as , ; |) or tab, space, whitespace"
        )
    return text


def _split(line: str, delimiter: Any) -> List[str]:
    return [f.strip() for f in (line.split() if delimiter is None else line.split(delimiter))]


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _sniff(lines: List[str]) -> Any:
    """The separator that splits every sampled line into the same number (> 1) of fields; whitespace as a fallback."""
    sample = lines[:_SNIFF_LINES]
    consistent = []
    for d in DELIMITERS + (None,):
        counts = {len(_split(line, d)) for line in sample}
        if len(counts) == 1 and counts.pop() > 1:
            consistent.append(d)
    # Prefer a separator that leaves only numbers ("1.5;2" splits consistently on "," too when every line has one).
    numeric = [d for d in consistent if all(_is_number(f) for line in sample for f in _split(line, d))]
    if numeric or consistent:
        return (numeric or consistent)[0]
    return ","  # one field per line: a single column


def _text_lines(p: Path, what: str) -> List[Tuple[int, str]]:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {p} is not a UTF-8 text file (binary data with a {p.suffix} name?)") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {p}: {e.strerror or _one_line(e)}") from None
    out = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise UsageError(f"{what} {p} holds no data (only blank or # comment lines)")
    return out


def load_table(p: Path, delimiter: Any = "auto", what: str = "INPUT") -> np.ndarray:
    """A numeric text table (CSV, TSV, whitespace): separator detected unless given, one header line skipped."""
    numbered = _text_lines(p, what)
    lines = [line for _, line in numbered]
    if delimiter == "auto":
        delimiter = "\t" if p.suffix.lower() == ".tsv" else _sniff(lines[1:] if len(lines) > 1 else lines)
    first = _split(lines[0], delimiter)
    if not all(_is_number(f) for f in first) and len(lines) > 1 and all(_is_number(f) for f in _split(lines[1], delimiter)):
        numbered, lines = numbered[1:], lines[1:]  # a header line
    try:
        X = np.loadtxt(lines, delimiter=delimiter, ndmin=2, dtype=np.float64, comments=None)
    except ValueError:
        raise UsageError(_table_problem(p, numbered, delimiter)) from None
    return X


def _table_problem(p: Path, numbered: List[Tuple[int, str]], delimiter: Any) -> str:
    """Find the first line numpy could not read and say what is wrong with it."""
    shown = "whitespace" if delimiter is None else repr(delimiter)
    width = None
    for lineno, line in numbered:
        fields = _split(line, delimiter)
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            return (
                f"{p} line {lineno} has {len(fields)} fields, the first data line has {width} "
                f"(separator {shown}; pass --delimiter if that is not the separator)"
            )
        for j, f in enumerate(fields):
            if not _is_number(f):
                what = "an empty field" if f == "" else f"{f[:30]!r}, which is not a number"
                return (
                    f"{p} line {lineno}, column {j + 1}: {what}; only numeric columns can be embedded "
                    f"(separator {shown}; remove text columns, give labels with --labels, or pass --delimiter)"
                )
    return f"{p} could not be read as a numeric table (separator {shown}; try --delimiter)"


def _matrix(X: Any, path: str) -> np.ndarray:
    """The data as a finite 2-D float array, or a UsageError saying what it is instead."""
    X = np.asarray(X)
    kind = X.dtype.kind
    if kind == "c":
        raise UsageError(f"{path} holds complex numbers; t-SNE needs real-valued data")
    if kind not in "fiub":
        raise UsageError(f"{path} holds {X.dtype} values; t-SNE needs numbers (float or integer)")
    if X.ndim == 0:
        raise UsageError(f"{path} holds a single number (a 0-d array); t-SNE needs a 2-D array (n_samples, n_features)")
    if X.ndim == 1:
        raise UsageError(
            f"{path} holds a 1-D array of shape {X.shape}; t-SNE needs a 2-D array (n_samples, n_features) "
            "— for one feature per sample save X.reshape(-1, 1)"
        )
    if X.ndim > 2:
        raise UsageError(
            f"{path} holds a {X.ndim}-D array of shape {X.shape}; t-SNE needs a 2-D array (n_samples, n_features) "
            "— flatten each sample first: X.reshape(len(X), -1)"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path} holds no data (shape {X.shape})")
    if kind != "f":
        X = X.astype(np.float32 if X.dtype.itemsize <= 2 else np.float64)
    elif X.dtype == np.float16:
        X = X.astype(np.float32)
    elif X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise UsageError(
            f"{path} contains NaN or infinity (first at row {i}, column {j}); remove or impute those values first"
        )
    return np.ascontiguousarray(X)


def _pick(keys: List[str], path: str) -> Tuple[str, Optional[str]]:
    data_key = next((k for k in DATA_KEYS if k in keys), None)
    if data_key is None:
        rest = [k for k in keys if k not in LABEL_KEYS]
        if len(rest) != 1:
            raise UsageError(
                f"{path} holds arrays {keys}: name the data array one of {', '.join(DATA_KEYS)} "
                f"(and the labels one of {', '.join(LABEL_KEYS)})"
            )
        data_key = rest[0]
    return data_key, next((k for k in LABEL_KEYS if k in keys), None)


def _torch_load(p: Path, what: str) -> Any:
    try:
        import torch
    except ImportError:
        raise UsageError(f"reading {what} {p} (a .pt file) needs torch: pip install torch") from None
    try:
        with warnings.catch_warnings():  # torch's notes about its own checks are not the user's problem
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt archive, pickled code (weights_only refuses), a truncated file...
        raise UsageError(f"cannot read {what} {p} as a torch file: {_one_line(e)[:200]}") from None


def _tensor_to_numpy(t: Any, path: str) -> np.ndarray:
    import torch

    if isinstance(t, np.ndarray):
        return t
    if not isinstance(t, torch.Tensor):
        raise UsageError(
            f"{path} holds a {type(t).__name__}; expected a tensor, or a dict with the data under one of "
            f"{', '.join(DATA_KEYS)}"
        )
    if t.layout != torch.strided:
        raise UsageError(f"{path} holds a sparse tensor ({t.layout}); save a dense tensor (t.to_dense())")
    t = t.detach()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # bfloat16 / float16 have no exact numpy twin
    return t.numpy()


def load_input(path: str, delimiter: Any = "auto") -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Data (n, d) as a finite float array, and labels when the file carries them (.npz / .pt dicts).

    Formats: .npy; .npz (data under X/x/data/embeddings/embedding/features or the
    only non-label array, labels under labels/label/y/target/targets); .csv/.tsv/.txt
    (numeric table, separator detected, one header line allowed); .pt/.pth (a
    tensor or a dict with the same keys; needs torch).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise UsageError(
            f"unsupported input format {suffix or '(no extension)'} for {path}; use one of {', '.join(INPUT_SUFFIXES)}"
        )
    p = _readable(path, "INPUT")
    labels = None
    try:
        if suffix == ".npy":
            X = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                keys = list(f.keys())
                if not keys:
                    raise UsageError(f"{path} is an .npz archive without arrays")
                data_key, lab_key = _pick(keys, path)
                X = f[data_key]
                labels = f[lab_key] if lab_key else None
        elif suffix in (".csv", ".tsv", ".txt"):
            X = load_table(p, delimiter)
        else:
            obj = _torch_load(p, "INPUT")
            if isinstance(obj, dict):
                keys = [k for k in obj if isinstance(k, str)]
                data_key, lab_key = _pick(keys, path)
                labels = _tensor_to_numpy(obj[lab_key], path) if lab_key else None
                obj = obj[data_key]
            X = _tensor_to_numpy(obj, path)
    except UsageError:
        raise
    except Exception as e:  # truncated or corrupt .npy/.npz, object arrays (pickles), zip errors
        raise UsageError(f"cannot read INPUT {path} as {suffix}: {_one_line(e)[:200]}") from None
    return _matrix(X, path), labels


def check_labels(labels: Any, n: int, source: str) -> np.ndarray:
    """Labels as a 1-D array of length n (numbers or strings), or a UsageError."""
    lab = np.asarray(labels)
    if lab.ndim == 2 and 1 in lab.shape:
        lab = lab.ravel()
    if lab.ndim != 1:
        raise UsageError(f"labels from {source} must be 1-D (one label per sample), got shape {lab.shape}")
    if lab.dtype.kind not in "iubfUS":
        raise UsageError(f"labels from {source} must be numbers or strings, got dtype {lab.dtype}")
    if lab.shape[0] != n:
        raise UsageError(f"labels from {source} has {lab.shape[0]} entries but the data has {n} rows")
    return lab


def load_labels(path: str, n: int) -> np.ndarray:
    """One label per data row from .npy/.npz/.pt, or a text file (one per line, or one delimited line; a
    header line is dropped when the file has n + 1 lines)."""
    suffix = Path(path).suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise UsageError(
            f"unsupported --labels format {suffix or '(no extension)'} for {path}; use one of {', '.join(INPUT_SUFFIXES)}"
        )
    p = _readable(path, "--labels")
    try:
        if suffix == ".npy":
            lab = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                keys = list(f.keys())
                key = next((k for k in LABEL_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise UsageError(f"--labels {path} holds arrays {keys}; name the labels one of {', '.join(LABEL_KEYS)}")
                lab = f[key]
        elif suffix in (".pt", ".pth"):
            obj = _torch_load(p, "--labels")
            if isinstance(obj, dict):
                key = next((k for k in LABEL_KEYS if k in obj), None)
                if key is None:
                    raise UsageError(f"--labels {path} is a dict without a key {', '.join(LABEL_KEYS)}")
                obj = obj[key]
            lab = _tensor_to_numpy(obj, path)
        else:
            lab = _text_labels(p, n)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot read --labels {path} as {suffix}: {_one_line(e)[:200]}") from None
    return check_labels(lab, n, f"--labels {path}")


def _text_labels(p: Path, n: int) -> np.ndarray:
    lines = [line.strip() for _, line in _text_lines(p, "--labels")]
    if len(lines) == 1 and n > 1:
        d = _sniff(lines)
        fields = _split(lines[0], d)
    else:
        if len(lines) == n + 1:
            lines = lines[1:]  # a header
        fields = [line.strip().strip('"') for line in lines]
    if all(re.fullmatch(r"[+-]?\d+", f) for f in fields):
        return np.array([int(f) for f in fields], dtype=np.int64)
    return np.array(fields)


def check_output(path: str, what: str = "-o") -> str:
    """Refuse, before any computation, an output that cannot be written: unknown suffix, a directory, a
    missing parent directory, .pt without torch."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UsageError(
            f"{what} {path}: unsupported output format {suffix or '(no extension)'}; "
            f"use one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    if suffix == ".pt":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UsageError(f"{what} {path}: writing .pt needs torch (pip install torch); or use .npy") from None
    _check_writable(path, what)
    return path


def _check_writable(path: str, what: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{what} {path}: directory {parent} is not writable")


def write_output(path: str, Y: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
    """Write ``Y`` to exactly ``path`` in the format of its suffix (atomically: a temporary file in the same
    directory, then a rename, so a failure leaves no half-written file).

    .npy: the array; .npz: ``embedding`` (and ``labels`` when known); .csv/.tsv/.txt: one row per sample,
    comma / tab / space separated, no header, 9 significant digits (float32 round-trips); .pt: a tensor.
    """
    suffix = Path(path).suffix.lower()
    directory = str(Path(path).parent) or "."
    fd, tmp = tempfile.mkstemp(prefix=".reprkit-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if suffix == ".npy":
                np.save(f, Y, allow_pickle=False)
            elif suffix == ".npz":
                arrays = {"embedding": Y}
                if labels is not None and labels.dtype.kind != "O":
                    arrays["labels"] = labels
                np.savez(f, **arrays)
            elif suffix in (".csv", ".tsv", ".txt"):
                sep = {".csv": ",", ".tsv": "\t", ".txt": " "}[suffix]
                np.savetxt(f, Y, delimiter=sep, fmt="%.9g")
            elif suffix == ".pt":
                import torch

                torch.save(torch.from_numpy(np.ascontiguousarray(Y)), f)
            else:  # check_output refused it already
                raise UsageError(f"unsupported output format {suffix}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = [
    "UsageError", "load_input", "load_labels", "check_labels", "load_table", "check_output", "write_output",
    "parse_delimiter", "INPUT_SUFFIXES", "OUTPUT_SUFFIXES",
]
