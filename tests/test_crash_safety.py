"""Crash safety of ``causal-wm run``: a run killed with SIGKILL leaves no partial results folder, a
later run succeeds (and clears the killed run's temporary folder), and two runs into one output
folder do not corrupt each other.

Each run is a real subprocess of the CLI. The library has no test hooks: the driver below patches
the process it runs in (announce a phase by writing a marker file, then keep going or wait), so the
test can SIGKILL it at that moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    marker, phase = Path(os.environ["CWM_TEST_MARKER"]), os.environ.get("CWM_TEST_PHASE", "")

    def announce(what):
        marker.write_text(what)

    if phase == "sampling":  # announce, then sample for real (long enough to be killed mid-way)
        import causal_wm.backends.numpyro as backend
        real_sample = backend.sample

        def sample(plan, s):
            announce("sampling")
            return real_sample(plan, s)

        backend.sample = sample
    elif phase == "report":  # results half written in the temporary folder: stop there
        import causal_wm.reporting as reporting

        def render_report(d, pdf=False, **kw):
            announce("report")
            time.sleep(600)

        reporting.render_report = render_report
    elif phase == "swap":  # both runs reach the rename together, and each rename is slow
        import types
        import causal_wm.study as study
        real_write = study.Study._write

        def write(self, d, *a, **k):
            real_write(self, d, *a, **k)
            Path(f"{marker}.{os.getpid()}").write_text("ready")
            while len(list(marker.parent.glob(marker.name + ".*"))) < 2:
                time.sleep(0.05)

        def slow_replace(src, dst):
            os.replace(src, dst)
            time.sleep(2.0)

        study.Study._write = write
        study.os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
        study.os.replace = slow_replace

    from causal_wm.cli import main  # the console entry point, with its Ctrl-C handling
    sys.argv[0] = "causal-wm"
    main()
    """
)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    x = rng.normal(size=150)
    pd.DataFrame({"x": x, "y": 1.0 + 2.0 * x + rng.normal(size=150)}).to_csv(d / "data.csv", index=False)
    (d / "model.yaml").write_text("name: crash\nnodes:\n  x: {}\n  y: {formula: x}\n")
    (d / "crash.yaml").write_text(
        "name: crash\nmodel: model.yaml\ndata: {path: data.csv}\nseed: 1\n"
        "fit: {chains: 1, draws: 150, warmup: 150}\n"
        "queries:\n  - {name: slope, kind: effect, outcome: y, do: {x: 1}, vs: {x: 0}}\n")
    (d / "driver.py").write_text(DRIVER)
    return d


def _start(study: Path, out: Path, marker: Path, phase: str = "", *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CWM_TEST_MARKER": str(marker), "CWM_TEST_PHASE": phase}
    return subprocess.Popen([sys.executable, str(study / "driver.py"), "run", str(study / "crash.yaml"),
                             "--out", str(out), "--quiet", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, marker: Path, after: float, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before reaching its phase: {proc.communicate()[0]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.communicate()
            pytest.fail("the run never reached its phase")
        time.sleep(0.05)
    time.sleep(after)
    if proc.poll() is not None:
        pytest.fail(f"the run finished before it could be killed: {proc.communicate()[0]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)  # reap it and close its pipe
    assert proc.returncode == -signal.SIGKILL


def _run(study, out, tmp, *extra) -> subprocess.CompletedProcess:
    proc = _start(study, out, tmp / "unused-marker", "", *extra)
    output, _ = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


def _complete(folder: Path) -> dict:
    names = {p.name for p in folder.iterdir()}
    assert {"posterior.nc", "results.json", "summary.csv", "manifest.json", "report.html"} <= names, names
    res = json.loads((folder / "results.json").read_text())
    man = json.loads((folder / "manifest.json").read_text())
    assert res["seed"] == man["seed"]
    return res


def test_killed_while_sampling_leaves_nothing(study, tmp_path):
    out = tmp_path / "out"
    proc = _start(study, out, tmp_path / "marker", "sampling", "--draws", "20000", "--warmup", "20000")
    _kill_when(proc, tmp_path / "marker", after=1.0)
    assert not (out / "crash").exists()
    assert not out.exists() or list(out.iterdir()) == []  # nothing is written before the fit ends


def test_ctrl_c_while_sampling_exits_130_saying_nothing_was_written(study, tmp_path):
    """Before, 2 of 8 interrupted runs died of a segmentation fault (the interpreter's shutdown under
    XLA's running threads), and none said what was left."""
    for after in (0.5, 1.5, 3.0):
        out, marker = tmp_path / f"out{after}", tmp_path / f"marker{after}"
        proc = _start(study, out, marker, "sampling", "--draws", "20000", "--warmup", "20000")
        t0 = time.monotonic()
        while not marker.exists() and proc.poll() is None and time.monotonic() - t0 < 300:
            time.sleep(0.05)
        time.sleep(after)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, (proc.returncode, output)
        assert "interrupted: nothing was written" in output
        assert not out.exists() or list(out.iterdir()) == []


def test_killed_while_writing_the_report_leaves_no_results_and_a_rerun_cleans_up(study, tmp_path):
    out = tmp_path / "out"
    proc = _start(study, out, tmp_path / "marker", "report")
    _kill_when(proc, tmp_path / "marker", after=0.5)
    left = sorted(p.name for p in out.iterdir())
    assert "crash" not in left  # no partial results folder under the final name
    assert len(left) == 1 and left[0].startswith(".crash.run-")  # only the hidden temporary folder
    partial = out / left[0]
    assert (partial / "results.json").is_file() and not (partial / "report.html").exists()
    # a later run succeeds, ignores the partial folder's contents and removes it (its process is gone)
    r = _run(study, out, tmp_path)
    assert r.returncode == 0, r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["crash"]
    _complete(out / "crash")


@pytest.mark.slow  # two more CLI runs; the default tests cover a rerun after a kill
def test_a_rerun_replaces_results_whole_and_a_live_runs_folder_is_left_alone(study, tmp_path):
    out = tmp_path / "out"
    r = _run(study, out, tmp_path, "--seed", "3")
    assert r.returncode == 0, r.stdout
    # a temporary folder of a run still going (this test process is alive) must survive a later run
    mine = out / f".crash.run-{_host()}-{os.getpid()}-keep"
    mine.mkdir()
    r = _run(study, out, tmp_path, "--seed", "4")
    assert r.returncode == 0, r.stdout
    assert mine.is_dir()
    assert _complete(out / "crash")["seed"] == 4


def _host() -> str:
    import socket
    import zlib

    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


@pytest.mark.slow  # two CLI runs at once; the default tests cover a kill and a rerun
def test_two_concurrent_runs_into_one_folder_do_not_corrupt_each_other(study, tmp_path):
    out = tmp_path / "out"
    (out / "crash").mkdir(parents=True)  # an earlier run's results: each run must swap it out
    (out / "crash" / "earlier.txt").write_text("earlier results")
    (out / "crash" / "manifest.json").write_text(json.dumps({"folder": "study", "study": "crash"}))
    marker = tmp_path / "ready"
    procs = [_start(study, out, marker, "swap", "--seed", str(seed)) for seed in (5, 6)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n-----\n".join(outputs)
    assert sorted(p.name for p in out.iterdir()) == ["crash"]  # no leftovers of either run
    res = _complete(out / "crash")
    assert not (out / "crash" / "earlier.txt").exists()
    assert res["seed"] in (5, 6)  # one whole run: the last to swap its folder in
    import arviz as az

    assert int(az.from_netcdf(out / "crash" / "posterior.nc").attrs["seed"]) == res["seed"]
