"""``--threads`` of the ``flipad`` command and its ``auto`` default."""
import os

import pytest
import torch

from flipad_sklearn import cli


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _machine(monkeypatch, cores, load, omp=None):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)),
                        raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)


@pytest.mark.parametrize("cores, load, omp, expected", [
    (2, 0.0, None, 2),        # idle: every core
    (2, 1.2, None, 1),        # another job on one of two cores: one thread
    (2, 5.8, None, 1),        # overloaded: still one
    (16, 3.4, None, 13),      # a big machine keeps its free cores
    (16, 0.0, "3", 3),        # the user's OMP_NUM_THREADS wins
    (2, 0.0, "0", 2),         # an unusable OMP_NUM_THREADS is ignored
])
def test_auto_threads(monkeypatch, cores, load, omp, expected):
    _machine(monkeypatch, cores, load, omp)
    assert cli.auto_threads() == expected


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("auto", "auto")])
def test_threads_option_is_applied_before_the_command(
        monkeypatch, tmp_path, capsys, restore_threads, value, expected):
    _machine(monkeypatch, 2, 1.2)              # auto -> 1 on this pretend machine
    torch.set_num_threads(2)
    code = cli.main(["score", str(tmp_path / "missing.flipad"), str(tmp_path),
                     "--threads", value])
    assert code == cli.EXIT_ERROR              # no detector: the command itself failed
    want = 1 if expected == "auto" else expected
    assert torch.get_num_threads() == want
    capsys.readouterr()


@pytest.mark.parametrize("command", [["fit", "--generator", "g.py:G", "--own", "a",
                                      "-o", "d.flipad"],
                                     ["score", "d.flipad", "x.png"],
                                     ["attribute", "--model", "a=d.flipad", "x.png"]])
@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_threads_option_rejects_bad_values(command, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--threads", bad])
    assert exc.value.code == cli.EXIT_USAGE
    assert "--threads" in capsys.readouterr().err
