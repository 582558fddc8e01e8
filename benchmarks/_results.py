"""One way for a benchmark to write its result file: a header with the commit,
torch threads, device and date, then the tables, to ``benchmarks/results/``.

Every benchmark writes through :func:`write_result` (or :func:`tee_result`,
which also prints).  ``--results-dir`` (:func:`add_result_args`) sends the file
elsewhere; a ``--quick`` run goes to a temporary folder by default, so that a
smoke run never overwrites the result the documentation includes.
"""

import contextlib
import datetime
import io
import os
import platform
import subprocess
import sys
import tempfile

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
#: where a ``--quick`` run writes unless ``--results-dir`` says otherwise
QUICK_RESULTS = os.path.join(tempfile.gettempdir(), "flipad_benchmarks_quick")


def _commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(RESULTS)).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True,
                               cwd=os.path.dirname(RESULTS)).stdout.strip()
        commit = commit + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        commit = "unknown"
    return commit


#: the code a run ran: read when the benchmark starts, not when it writes
COMMIT_AT_START = _commit()


def run_header(device="cpu"):
    """The facts a reader needs to compare two runs."""
    commit = COMMIT_AT_START
    dev = str(device)
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev = f"{dev} ({torch.cuda.get_device_name()})"
    else:
        dev = f"{dev} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"commit {commit} · torch {torch.__version__} · {torch.get_num_threads()} "
            f"torch threads · device {dev} · {now}")


def write_result(name, text, device="cpu", results_dir=None):
    """Write ``text`` under a run header to ``results_dir/<name>`` (default
    ``benchmarks/results/``); returns the path.

    ``name`` may also be a path with a folder (an old ``--out FILE``): then
    that folder is used.
    """
    folder, name = os.path.split(name)
    folder = folder or (RESULTS if results_dir is None else results_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(f"<!-- written by the benchmark itself; {run_header(device)} -->\n\n")
        f.write(text.rstrip() + "\n")
    return path


def add_result_args(parser):
    """``--results-dir``: where :func:`write_result` puts the file."""
    parser.add_argument("--results-dir", default=None,
                        help="folder of the result file (default: benchmarks/results/, "
                             f"or {QUICK_RESULTS} for a --quick run)")
    return parser


def results_dir(args, quick=None):
    """The folder ``args`` asks for: ``--results-dir``, else the quick folder
    for a quick run (``quick``, default ``args.quick``), else ``benchmarks/results``."""
    if getattr(args, "results_dir", None):
        return args.results_dir
    quick = getattr(args, "quick", False) if quick is None else quick
    return QUICK_RESULTS if quick else RESULTS


class _Tee(io.StringIO):
    def write(self, text):
        sys.__stdout__.write(text)
        return super().write(text)


@contextlib.contextmanager
def captured():
    """Print as usual and keep a copy: ``with captured() as out: ...; out.getvalue()``."""
    buf = _Tee()
    with contextlib.redirect_stdout(buf):
        yield buf


def tee_result(name, fn, *args, device="cpu", results_dir=None, **kwargs):
    """Run ``fn(*args, **kwargs)`` printing as usual, then write what it printed
    with :func:`write_result`; returns ``fn``'s value."""
    with captured() as buf:
        value = fn(*args, **kwargs)
    path = write_result(name, buf.getvalue(), device=device, results_dir=results_dir)
    print(f"written: {path}")
    return value
