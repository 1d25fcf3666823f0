"""The command line: every class of bad input is one line on stderr with exit status 2, checked before the fit
starts (the fit is replaced by a tripwire in those tests); -o writes exactly the path given in the format of its
suffix, and the embedding it writes is the Python API's; --version, --help, Ctrl-C (130), runtime failures (1)."""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import reprkit
from reprkit import cli
from reprkit.manifold import TSNE

torch = pytest.importorskip("torch")


def _data(n: int = 60, d: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(3, d))
    return (centres[np.arange(n) % 3] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if a fit starts: every check must come before it."""

    def tripwire(self, X, y=None):
        raise AssertionError("the fit started before the input was validated")

    monkeypatch.setattr(TSNE, "fit_transform", tripwire)
    monkeypatch.setattr(TSNE, "fit", tripwire)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_usage_error(argv, capsys, *needles):
    rc, out, err = run(argv, capsys)
    assert rc == cli.EXIT_USAGE == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reprkit tsne: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def x_npy(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, _data())
    return p


# --- inputs that cannot be used ---
def test_missing_input(tmp_path, capsys, no_fit):
    assert_usage_error(["tsne", tmp_path / "nope.npy", "-o", tmp_path / "o.npy"], capsys, "not found", "nope.npy")


def test_input_is_a_directory(tmp_path, capsys, no_fit):
    d = tmp_path / "dir.npy"
    d.mkdir()
    assert_usage_error(["tsne", d, "-o", tmp_path / "o.npy"], capsys, "is a directory")


def test_unreadable_input(tmp_path, capsys, no_fit, monkeypatch, x_npy):
    # Tests run as root here, where chmod 000 does not stop reads: make open() refuse instead.
    import builtins

    real_open = builtins.open

    def refusing_open(file, *a, **k):
        if os.fspath(file) == os.fspath(x_npy):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", refusing_open)
    assert_usage_error(["tsne", x_npy, "-o", tmp_path / "o.npy"], capsys, "cannot read", "Permission denied")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_empty_file(tmp_path, capsys, no_fit, suffix):
    p = tmp_path / f"empty{suffix}"
    p.write_bytes(b"")
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "is empty")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_corrupt_binary_file(tmp_path, capsys, no_fit, suffix):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "cannot read", p.name)


def test_truncated_npy(tmp_path, capsys, no_fit):
    full = tmp_path / "full.npy"
    np.save(full, _data())
    p = tmp_path / "cut.npy"
    p.write_bytes(full.read_bytes()[:200])
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "cannot read")


def test_pickled_object_array_refused(tmp_path, capsys, no_fit):
    p = tmp_path / "obj.npz"
    np.savez(p, X=np.array([[1, "a"], [2, "b"]], dtype=object))
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "cannot read")


def test_npz_with_ambiguous_keys(tmp_path, capsys, no_fit):
    p = tmp_path / "two.npz"
    np.savez(p, a=_data(), b=_data())
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "holds arrays", "X")


def test_pt_without_tensor(tmp_path, capsys, no_fit):
    p = tmp_path / "list.pt"
    torch.save({"weights": torch.zeros(3), "bias": torch.zeros(3)}, p)
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "name the data")
    torch.save([1, 2, 3], p)
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "holds a list", "expected a tensor")


def test_pt_sparse_tensor(tmp_path, capsys, no_fit):
    p = tmp_path / "sparse.pt"
    torch.save(torch.eye(5).to_sparse(), p)
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "sparse")


@pytest.mark.parametrize(
    "array,needle",
    [
        (np.float64(3.0), "0-d"),
        (np.arange(10.0), "1-D"),
        (np.zeros((4, 3, 2)), "3-D"),
        (np.zeros((0, 3)), "no data"),
        (np.array([["a", "b"], ["c", "d"]]), "needs numbers"),
        (np.ones((5, 2), dtype=np.complex64), "complex"),
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN or infinity (first at row 0, column 1)"),
        (np.array([[1.0, 2.0], [np.inf, 3.0]]), "row 1, column 0"),
    ],
    ids=["0d", "1d", "3d", "empty", "strings", "complex", "nan", "inf"],
)
def test_unusable_arrays(tmp_path, capsys, no_fit, array, needle):
    p = tmp_path / "a.npy"
    np.save(p, array)
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, needle)


def test_unsupported_input_suffix(tmp_path, capsys, no_fit):
    p = tmp_path / "x.xlsx"
    p.write_bytes(b"PK\x03\x04")
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "unsupported input format .xlsx", ".npy")


# --- text tables ---
def test_csv_with_text_column_names_line_and_column(tmp_path, capsys, no_fit):
    p = tmp_path / "t.csv"
    p.write_text("1.0,2.0,3.0\n4.0,cat,6.0\n7.0,8.0,9.0\n")
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "line 2, column 2", "'cat'", "--delimiter")


def test_csv_ragged_rows(tmp_path, capsys, no_fit):
    p = tmp_path / "r.csv"
    p.write_text("1,2,3\n4,5,6\n7,8\n")
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "line 3 has 2 fields")


def test_csv_only_comments_and_binary(tmp_path, capsys, no_fit):
    p = tmp_path / "c.csv"
    p.write_text("# nothing here\n\n")
    assert_usage_error(["tsne", p, "-o", tmp_path / "o.npy"], capsys, "holds no data")
    b = tmp_path / "b.csv"
    b.write_bytes(b"\xff\xfe\x00\x81" * 50)
    assert_usage_error(["tsne", b, "-o", tmp_path / "o.npy"], capsys, "not a UTF-8 text file")


@pytest.mark.parametrize("sep", [",", ";", "\t", "|", " "])
def test_csv_delimiters_detected_and_header_skipped(tmp_path, sep):
    from reprkit._cli_io import load_input

    X = _data(12, 3)
    p = tmp_path / "t.csv"
    body = "\n".join(sep.join(f"{v:.9g}" for v in row) for row in X)
    p.write_text(sep.join(["a", "b", "c"]) + "\n" + body + "\n")
    got, labels = load_input(str(p))
    assert labels is None
    np.testing.assert_array_equal(got.astype(np.float32), X)  # 9 digits round-trip float32


def test_explicit_delimiter_and_bad_delimiter(tmp_path, capsys, no_fit):
    from reprkit._cli_io import load_input

    X = _data(10, 2)
    p = tmp_path / "semi.txt"
    p.write_text("\n".join(";".join(f"{v:.9g}" for v in r) for r in X))
    np.testing.assert_array_equal(load_input(str(p), ";")[0].astype(np.float32), X)
    assert_usage_error(["tsne", p, "--delimiter", "ab", "-o", tmp_path / "o.npy"], capsys, "--delimiter")
    # A separator that is not in the file: the message suggests --delimiter.
    assert_usage_error(["tsne", p, "--delimiter", ",", "-o", tmp_path / "o.npy"], capsys, "--delimiter")


# --- labels ---
def test_labels_missing_directory_mismatch(tmp_path, capsys, no_fit, x_npy):
    out = ["-o", tmp_path / "o.npy"]
    assert_usage_error(["tsne", x_npy, "--labels", tmp_path / "l.npy", *out], capsys, "--labels file not found")
    (tmp_path / "ld.npy").mkdir()
    assert_usage_error(["tsne", x_npy, "--labels", tmp_path / "ld.npy", *out], capsys, "is a directory")
    np.save(tmp_path / "short.npy", np.arange(10))
    assert_usage_error(["tsne", x_npy, "--labels", tmp_path / "short.npy", *out], capsys, "10 entries", "60 rows")
    np.save(tmp_path / "twod.npy", np.zeros((60, 2)))
    assert_usage_error(["tsne", x_npy, "--labels", tmp_path / "twod.npy", *out], capsys, "must be 1-D")
    (tmp_path / "bad.npy").write_bytes(b"garbage" * 20)
    assert_usage_error(["tsne", x_npy, "--labels", tmp_path / "bad.npy", *out], capsys, "cannot read --labels")
    np.savez(tmp_path / "mism.npz", X=_data(), y=np.arange(5))
    assert_usage_error(["tsne", tmp_path / "mism.npz", *out], capsys, "5 entries", "60 rows")


def test_text_labels_with_header_and_strings(tmp_path):
    from reprkit._cli_io import load_labels

    p = tmp_path / "l.csv"
    names = ["cat", "dog", "bird"] * 4
    p.write_text("label\n" + "\n".join(names) + "\n")
    np.testing.assert_array_equal(load_labels(str(p), 12), np.array(names))
    q = tmp_path / "l.txt"
    q.write_text(",".join(str(i % 3) for i in range(12)))
    np.testing.assert_array_equal(load_labels(str(q), 12), np.arange(12) % 3)


# --- outputs and plots ---
@pytest.mark.parametrize("target", ["o.xyz", "o", "missing_dir/o.npy"])
def test_bad_output_paths(tmp_path, capsys, no_fit, x_npy, target):
    assert_usage_error(["tsne", x_npy, "-o", tmp_path / target], capsys, "-o")


def test_output_is_directory_or_the_input(tmp_path, capsys, no_fit, x_npy):
    (tmp_path / "d.npy").mkdir()
    assert_usage_error(["tsne", x_npy, "-o", tmp_path / "d.npy"], capsys, "is a directory")
    assert_usage_error(["tsne", x_npy, "-o", x_npy], capsys, "overwrite the INPUT")


def test_nothing_to_write_or_no_input(capsys, no_fit, x_npy):
    assert_usage_error(["tsne", x_npy], capsys, "nothing to write")
    assert_usage_error(["tsne", "-o", "o.npy"], capsys, "give an INPUT file")


def test_plot_needs_matplotlib(tmp_path, capsys, no_fit, x_npy, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    assert_usage_error(["tsne", x_npy, "--plot", tmp_path / "p.png"], capsys, "--plot needs matplotlib", "pip install")


def test_plot_format_and_same_path(tmp_path, capsys, no_fit, x_npy):
    assert_usage_error(["tsne", x_npy, "--plot", tmp_path / "p.xyz"], capsys, "--plot", "unsupported plot format", ".png")
    same = tmp_path / "p.pdf"
    # A .pdf is a valid plot but not an embedding format: -o refuses its suffix first.
    assert_usage_error(["tsne", x_npy, "-o", same, "--plot", same], capsys, "-o")


# --- parameters ---
def test_parameters_checked_before_fit(tmp_path, capsys, no_fit, x_npy):
    out = ["-o", tmp_path / "o.npy"]
    assert_usage_error(["tsne", x_npy, "--perplexity", "60", *out], capsys, "--perplexity (60)", "60")
    assert_usage_error(["tsne", x_npy, "--method", "barnes_hut", "--n-components", "4", *out], capsys, "--method exact")
    assert_usage_error(["tsne", x_npy, "--metric", "precomputed", *out], capsys, "square")
    assert_usage_error(["tsne", "--demo", x_npy, *out], capsys, "not both")


@pytest.mark.parametrize(
    "option,value,needle",
    [
        ("--perplexity", "-1", "a number >= 1"),
        ("--perplexity", "nan", "finite"),
        ("--perplexity", "abc", "a number >= 1"),
        ("--n-jobs", str(10**6), "CPUs available"),
        ("--n-jobs", str(2**64), "CPUs available"),
        ("--n-jobs", "0", "CPUs available"),
        ("--max-iter", "-5", "integer >= 0"),
        ("--random-state", "-1", "[0, 2^63)"),
        ("--learning-rate", "0", "'auto' or a positive number"),
        ("--init", "pcaa", "invalid choice"),
    ],
)
def test_argparse_ranges(capsys, no_fit, x_npy, tmp_path, option, value, needle):
    rc, _, err = run(["tsne", x_npy, "-o", tmp_path / "o.npy", option, value], capsys)
    assert rc == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert option in last and needle in last, last


# --- what a run writes ---
ARGS = ["--max-iter", "60", "--exaggeration-iter", "20", "--perplexity", "10", "-q", "--random-state", "3"]


def _api_embedding(X, init="pca"):
    est = TSNE(perplexity=10.0, max_iter=60, exaggeration_iter=20, random_state=3, init=init)
    return np.asarray(est.fit_transform(X), dtype=np.float32)


def test_output_exact_path_every_format(tmp_path, capsys):
    X = _data()
    np.save(tmp_path / "x.npy", X)
    want = _api_embedding(X.astype(np.float32))
    readers = {
        "o.npy": lambda p: np.load(p),
        "o.npz": lambda p: np.load(p)["embedding"],
        "o.csv": lambda p: np.loadtxt(p, delimiter=","),
        "o.tsv": lambda p: np.loadtxt(p, delimiter="\t"),
        "o.txt": lambda p: np.loadtxt(p),
        "o.pt": lambda p: torch.load(p).numpy(),
    }
    for name, read in readers.items():
        out = tmp_path / "out" / name
        out.parent.mkdir(exist_ok=True)
        rc, _, err = run(["tsne", tmp_path / "x.npy", "-o", out, *ARGS], capsys)
        assert rc == 0, err
        assert sorted(os.listdir(out.parent)) == [name], os.listdir(out.parent)  # exactly that file, no temp left
        got = read(out)
        assert got.shape == (60, 2)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max(), err_msg=name)
        out.unlink()


def test_npz_output_carries_labels_and_reads_back(tmp_path, capsys):
    X = _data()
    np.savez(tmp_path / "in.npz", data=X, labels=np.arange(60) % 3)
    rc, _, err = run(["tsne", tmp_path / "in.npz", "-o", tmp_path / "o.npz", *ARGS], capsys)
    assert rc == 0, err
    with np.load(tmp_path / "o.npz") as f:
        np.testing.assert_array_equal(f["labels"], np.arange(60) % 3)
        assert f["embedding"].dtype == np.float32


def test_init_spectral_is_wired(tmp_path, capsys):
    X = _data()
    np.save(tmp_path / "x.npy", X)
    rc, _, err = run(["tsne", tmp_path / "x.npy", "-o", tmp_path / "s.npy", "--init", "spectral", *ARGS], capsys)
    assert rc == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), _api_embedding(X, "spectral"), rtol=1e-6, atol=1e-9)
    assert not np.allclose(np.load(tmp_path / "s.npy"), _api_embedding(X, "pca"))


def test_csv_input_and_plot_with_string_labels(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    X = _data()
    p = tmp_path / "x.csv"
    p.write_text("f1;f2;f3;f4;f5\n" + "\n".join(";".join(f"{v:.9g}" for v in r) for r in X))
    (tmp_path / "l.txt").write_text("\n".join(["alpha", "beta", "gamma"][i % 3] for i in range(60)))
    rc, _, err = run(["tsne", p, "--labels", tmp_path / "l.txt", "--plot", tmp_path / "p.png", *ARGS], capsys)
    assert rc == 0, err
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_and_summary_on_stderr(tmp_path, capsys, x_npy):
    rc, out, err = run(["tsne", x_npy, "-o", tmp_path / "o.npy", *[a for a in ARGS if a != "-q"]], capsys)
    assert rc == 0
    assert out == ""  # stdout stays clean for pipes
    assert "kNN, perplexity calibration" in err and "early exaggeration" in err and "optimisation" in err
    assert f"wrote {tmp_path / 'o.npy'}" in err


def test_progress_shows_stage_names():
    buf = io.StringIO()
    p = cli.Progress(100, exaggeration_iter=50, stream=buf)
    p.stage("kNN")
    p.stage("calibration")
    p(25, 3.5)
    p(75, 1.25)
    p.close()
    text = buf.getvalue()
    assert text.index("kNN") < text.index("calibration") < text.index("early exaggeration") < text.index("optimisation")
    assert "75/100" in text and "1.2500" in text


# --- failures after the checks ---
def test_keyboard_interrupt_is_130(capsys, monkeypatch, x_npy, tmp_path):
    def interrupted(self, X, y=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(TSNE, "fit_transform", interrupted)
    rc, _, err = run(["tsne", x_npy, "-o", tmp_path / "o.npy", "-q"], capsys)
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "o.npy").exists()


def test_runtime_failure_is_1_and_traceback_on_request(capsys, monkeypatch, x_npy, tmp_path):
    def boom(self, X, y=None):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(TSNE, "fit_transform", boom)
    rc, _, err = run(["tsne", x_npy, "-o", tmp_path / "o.npy", "-q"], capsys)
    assert rc == cli.EXIT_FAILURE == 1
    assert err.strip().splitlines() == [
        "reprkit tsne: failed: RuntimeError: kernel exploded second line (run again with --traceback for details)"
    ]
    with pytest.raises(RuntimeError, match="kernel exploded"):
        cli.main(["tsne", str(x_npy), "-o", str(tmp_path / "o.npy"), "-q", "--traceback"])


def test_write_failure_is_1_and_leaves_nothing(capsys, monkeypatch, x_npy, tmp_path):
    import reprkit._cli_io as io_mod

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.os, "replace", full_disk)
    rc, _, err = run(["tsne", x_npy, "-o", tmp_path / "o.npy", *ARGS], capsys)
    assert rc == 1 and "could not write" in err and "No space left" in err
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_warnings_are_one_line(capsys, monkeypatch, x_npy, tmp_path):
    def warns(self, X, y=None):
        warnings.warn("many duplicate rows\n(40 of 60)", UserWarning)
        return np.zeros((X.shape[0], 2))

    monkeypatch.setattr(TSNE, "fit_transform", warns)
    monkeypatch.setattr(TSNE, "kl_divergence_", 0.0, raising=False)
    rc, _, err = run(["tsne", x_npy, "-o", tmp_path / "o.npy"], capsys)
    assert rc == 0
    assert "reprkit: warning: many duplicate rows (40 of 60)" in err.splitlines()


# --- help and version ---
def test_version(capsys):
    rc, out, _ = run(["--version"], capsys)
    assert rc == 0 and out.strip() == f"reprkit {reprkit.__version__}"


def test_help_documents_every_option_without_rest(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    tsne = sub.choices["tsne"]
    for action in tsne._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, action.dest
        takes_value = action.nargs != 0 and action.option_strings
        if takes_value and action.default is not None:
            assert "default" in action.help, (action.dest, action.help)
    for argv in (["--help"], ["tsne", "--help"]):
        rc, out, _ = run(argv, capsys)
        assert rc == 0
        for rest in ("``", ":func:", ":class:", ":mod:", ":param"):
            assert rest not in out, (rest, argv)
        assert not re.search(r"^\s*\.\. \w+::", out, re.M)  # no reST directives
        assert "exit status" in out
    assert "spectral" in out and "--delimiter" in out


def test_python_dash_m_real_process(tmp_path):
    """A real process: the message for a corrupt file is one line, no traceback, exit status 2."""
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("X.npy", b"not an npy file")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-m", "reprkit", "tsne", str(bad), "-o", str(tmp_path / "o.npy")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
