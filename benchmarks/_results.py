"""One way for a benchmark to write its result file: a header with the commit,
torch threads, device and date, then the tables, to ``benchmarks/results/``."""

import datetime
import os
import platform
import subprocess

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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


def write_result(name, text, device="cpu"):
    """Write ``text`` under a run header to ``benchmarks/results/<name>``; returns the path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as f:
        f.write(f"<!-- written by the benchmark itself; {run_header(device)} -->\n\n")
        f.write(text.rstrip() + "\n")
    return path
