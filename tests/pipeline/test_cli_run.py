"""``stylize run`` in a subprocess: exit codes, bad rows, and a shard process killed mid-run."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import ROOT, make_photo, run_cli
from tests.pipeline.helpers import ENGINE_ARGS, output_files, write_manifest


def _summary(stdout: str) -> dict:
    report = [line for line in stdout.splitlines() if line.startswith("report: ")][-1][len("report: "):]
    return json.loads((Path(report) / "summary.json").read_text()) | {"_metrics": pd.read_parquet(Path(report) / "metrics.parquet")}


@pytest.fixture(scope="module")
def ephemeral_env(tmp_path_factory) -> dict:
    """Environment for a ``stylize run`` that starts its own ephemeral Prefect server. The tests share one
    PREFECT_HOME, so only the first start creates the database (its migrations take 10-20 s here)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path_factory.mktemp("ephemeral-home")), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1")
    return env


def test_bad_rows_counts_and_exit_codes(prefect_server, tmp_path):
    buf = io.BytesIO()
    make_photo(48, 40, seed=5).save(buf, format="JPEG")
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "corrupt.jpg").write_bytes(buf.getvalue()[:300])
    (tmp_path / "content" / "readme.jpg").write_text("not an image")
    bad = [{"content": "content/corrupt.jpg", "style": "styles/s0.png", "label": "a"},
           {"content": "content/absent.jpg", "style": "styles/s1.png", "label": "b"},
           {"content": "content/readme.jpg", "style": "styles/s0.png", "label": "c"}]
    path = write_manifest(tmp_path, 4, extra_rows=bad)
    out = tmp_path / "out"
    env = prefect_server.env
    first = run_cli("run", path, "--output", out, *ENGINE_ARGS, "--shard-size", "4", "--no-quality",
                    env=dict(env, STYLIZE_PROGRESS_SECONDS="0.001"))
    assert first.returncode == 1, first.stderr
    # stderr is a pipe: no bar, but plain progress lines (here as often as rows finish; by default each 60 s)
    lines = re.findall(r"^stylize run: (\d+)/7 \(\d+\.\d%\), \d+\.\d\d/s, elapsed \d+:\d\d:\d\d, eta [\d:?]+",
                       first.stderr, re.M)
    assert lines and all(0 <= int(n) < 7 for n in lines) and "\r" not in first.stderr
    assert "error: 3 row(s) failed; --max-failed allows 0" in first.stderr
    s = _summary(first.stdout)
    m = s.pop("_metrics")
    assert (s["total"], s["ok"], s["failed"], s["skipped"]) == (7, 4, 3, 0)
    assert s["ok"] + s["failed"] + s["skipped"] == len(pd.read_csv(path))
    errors = dict(zip(m["label"], m["error"]))
    assert "corrupt.jpg" in errors["a"] and ("truncated" in errors["a"] or "corrupt" in errors["a"])
    assert "absent.jpg: not found" in errors["b"]
    assert "readme.jpg: not an image" in errors["c"]
    assert len(output_files(out)) == 4
    assert "7 rows: 4 ok, 3 failed, 0 skipped" in first.stdout

    # Within --max-failed: exit 0; the good rows are skipped this time, the bad ones fail again.
    second = run_cli("run", path, "--output", out, *ENGINE_ARGS, "--max-failed", "3", "--no-quality", env=env)
    assert second.returncode == 0, second.stderr
    assert "stylize run: " not in second.stderr  # the default interval (60 s) is longer than this run
    s = _summary(second.stdout)
    assert (s["ok"], s["failed"], s["skipped"]) == (0, 3, 4)


def test_usage_and_validation_errors_exit_2(prefect_server, tmp_path):
    """Found before Prefect starts: no flow run is created for them."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs_before = len(client.read_flow_runs())
    bad_opt = run_cli("run", tmp_path / "m.csv", "--output", tmp_path / "o", "--steps", "0", env=prefect_server.env)
    assert bad_opt.returncode == 2 and bad_opt.stderr.startswith("error: ") and "Traceback" not in bad_opt.stderr
    (tmp_path / "m.csv").write_text("content,style\nphoto.jpg,\n,style.jpg\n")
    invalid = run_cli("run", tmp_path / "m.csv", "--output", tmp_path / "o", *ENGINE_ARGS, env=prefect_server.env)
    assert invalid.returncode == 2, invalid.stderr
    assert invalid.stderr.startswith("error: ") and "Traceback" not in invalid.stderr
    assert "row 0" in invalid.stderr and "row 1" in invalid.stderr
    assert not (tmp_path / "o").exists()
    # Many bad rows: a bounded list, and the command that lists them all.
    (tmp_path / "m.csv").write_text("content,style\n" + "photo.jpg,\n" * 250)
    many = run_cli("run", tmp_path / "m.csv", "--output", tmp_path / "o", *ENGINE_ARGS, env=prefect_server.env)
    lines = many.stderr.splitlines()
    assert many.returncode == 2 and lines[0].startswith("error: ") and "250 problems" in lines[0]
    assert sum(line.startswith("  row ") for line in lines) == 200
    assert lines[-1] == f"  ... and 50 more; `stylize manifest validate {tmp_path / 'm.csv'} --max-problems 0` lists them all"
    # Settings and weights the flow would refuse: refused by the same checks, before it starts.
    good = write_manifest(tmp_path, 1)
    # (Weights files are checked by the flow, for the rows still to do: tests/pipeline/test_flow.py.)
    for args, expected in (([*ENGINE_ARGS, "--device", "cuda"], "CUDA is not available"),
                           (["--method", "johnson", "--model", "random:x"], "random:SEED"),
                           (["--method", "adain", "--encoder", "random:0"], "method adain needs decoder weights"),
                           (["--method", "johnson", "--model", "random:0", "--tile-size", "10"], "tile_size")):
        proc = run_cli("run", good, "--output", tmp_path / "o", *args, env=prefect_server.env)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    # Output locations that cannot be used: said before Prefect starts, not at the first write.
    (tmp_path / "afile").write_text("x")
    for args, expected in ((["--output", tmp_path / "afile" / "out"], f"{tmp_path / 'afile'} is a file, not a folder"),
                           (["--output", tmp_path / "o", "--report-dir", tmp_path / "afile"], "is a file, not a folder"),
                           (["--output", ""], "argument -o/--output: empty")):
        proc = run_cli("run", good, *ENGINE_ARGS, *args, env=prefect_server.env)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs()) == runs_before


def test_killed_shard_then_rerun_every_row_ok_once(prefect_server, tmp_path):
    n = 120
    path = write_manifest(tmp_path, n, size=(40, 32))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "stylize_cli.main", "run", str(path), "--output", str(out), *ENGINE_ARGS,
            "--no-quality", "--batch-size", "1", "--shard-size", "30", "--format", "png"]
    proc = subprocess.Popen(args, cwd=ROOT, env=dict(prefect_server.env, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    def done() -> list[Path]:
        return [f for f in output_files(out) if not f.name.endswith(".part")]

    while len(done()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = {f.name: f.stat().st_mtime_ns for f in done()}
    assert 2 <= len(before) < n

    rerun = run_cli(*args[3:], env=prefect_server.env)
    assert rerun.returncode == 0, rerun.stderr
    s = _summary(rerun.stdout)
    m = s.pop("_metrics")
    assert (s["total"], s["failed"]) == (n, 0)
    assert s["skipped"] == len(before) and s["ok"] == n - len(before)
    # Every row is written exactly once: the killed run's rows are skipped, the rest are ok.
    assert sorted(m.loc[m["status"] == "skipped", "output"]) == sorted(before)
    assert m["output"].is_unique and set(m["status"]) <= {"ok", "skipped"}
    files = output_files(out)
    assert sorted(f.name for f in files) == sorted(m["output"])  # no partial or leftover temporary files
    for f in files:
        with Image.open(f) as im:
            im.load()  # complete, decodable images
        if f.name in before:
            assert f.stat().st_mtime_ns == before[f.name]


def test_make_demo_fast_part_runs_the_builtin_model(prefect_server, tmp_path):
    """The second command of ``make demo``: the fast manifest through builtin:johnson_mosaic (small size here)."""
    out = tmp_path / "fast"
    r = run_cli("run", ROOT / "examples" / "demo_fast_manifest.csv", "--output", out, "--method", "johnson",
                "--model", "builtin:johnson_mosaic", "--size", "64", "--max-failed", "0", "--no-quality",
                env=prefect_server.env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 rows: 4 ok, 0 failed, 0 skipped" in r.stdout + r.stderr
    from PIL import Image

    outputs = sorted(p for p in out.glob("*.jpg"))
    assert len(outputs) == 4 and all(max(Image.open(p).size) == 64 for p in outputs)


def test_credentials_in_run_arguments_never_reach_prefect(prefect_server, tmp_path):
    """Refused by the CLI before a flow run exists: Prefect stores a run's parameters (database, UI)."""
    from prefect.client.orchestration import get_client

    path = write_manifest(tmp_path, 1)
    with get_client(sync_client=True) as client:
        before = len(client.read_flow_runs())
    secret = "s3://AKIAEXAMPLE:UriSecretVal77@bucket"
    slashed = "s3://AKIAEXAMPLE:UriSecret/Val77+x@bucket"  # about half of AWS secret keys hold a "/"
    no_user = "s3://:UriSecretVal77@bucket"
    for extra in (["--output", f"{secret}/out"], ["--output", tmp_path / "o", "--report-dir", f"{secret}/r"],
                  ["--output", tmp_path / "o", "--encoder", f"{secret}/vgg.pth"], ["--output", f"{slashed}/out"],
                  ["--output", tmp_path / "o", "--report-dir", f"{no_user}/r"]):
        proc = run_cli("run", path, *ENGINE_ARGS[:2], *extra, env=prefect_server.env)
        assert proc.returncode == 2 and "credentials in URIs are not supported" in proc.stderr, proc.stderr
        assert "UriSecretVal77" not in proc.stderr + proc.stdout and "Val77" not in proc.stderr + proc.stdout
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs()) == before


def test_unreachable_prefect_api_is_one_line_and_exit_1(tmp_path):
    path = write_manifest(tmp_path, 1)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    # A home of its own: the ephemeral server given no time may be stopped in the middle of creating its database.
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    base.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    cases = {"server": dict(base, PREFECT_API_URL=f"http://127.0.0.1:{port}/api"),
             # an ephemeral server that cannot start in time (here: no time at all)
             "ephemeral": dict(base, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")}
    for name, env in cases.items():
        proc = subprocess.run([sys.executable, "-m", "stylize_cli.main", "run", str(path), "--output",
                               str(tmp_path / "out"), *ENGINE_ARGS], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 1, (name, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot reach "), (name, proc.stderr)
        assert (f"127.0.0.1:{port}" in lines[0]) == (name == "server")
        assert not (tmp_path / "out").exists()


def _children(pid: int) -> dict[int, str]:
    """PID → command line of the live (non-zombie) child processes of ``pid``."""
    found = {}
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and stat[0] != "Z":
                found[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the server guard needs /proc (Linux)")
def test_sigkilled_run_does_not_leave_its_ephemeral_server(tmp_path, ephemeral_env):
    path = write_manifest(tmp_path, 1)
    env = ephemeral_env
    proc = subprocess.Popen([sys.executable, "-m", "stylize_cli.main", "run", str(path), "--output",
                             str(tmp_path / "out"), "--method", "gatys", "--encoder", "random:0", "--size", "32",
                             "--steps", "1000000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until the ephemeral server and its watcher run
            kids = _children(proc.pid)
            server = [p for p, cmd in kids.items() if "uvicorn" in cmd]
            if server and any("server_guard" in cmd for cmd in kids.values()):
                break
            assert proc.poll() is None, "stylize run ended early"
            time.sleep(0.2)
        else:
            raise AssertionError(f"no guarded ephemeral server: {_children(proc.pid)}")
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15
        while _alive(server[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server[0]), "the ephemeral server outlived the killed run"
    finally:
        proc.kill()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_a_run_within_seconds_with_one_line(tmp_path, sig, request, ephemeral_env):
    """A terminal's Ctrl-C signals the whole process group. The run exits 130 (SIGTERM: 143) with one line
    within seconds, even in the middle of a long Gatys row; its ephemeral server (Ctrl-C case) is stopped. The
    SIGTERM case uses the session's server (an ephemeral start costs ~15 s)."""
    path = write_manifest(tmp_path, 2)
    if sig == signal.SIGTERM:
        env = request.getfixturevalue("prefect_server").env
    else:
        env = ephemeral_env
    proc = subprocess.Popen([sys.executable, "-m", "stylize_cli.main", "run", str(path), "--output",
                             str(tmp_path / "out"), "--method", "gatys", "--encoder", "random:0", "--size", "32",
                             "--steps", "1000000", "--shard-size", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "out").glob("_reports/*/shards/*.parquet")):  # the shards are starting
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        time.sleep(3)  # the rows are in their (endless) optimisation
        server = [p for p, cmd in _children(proc.pid).items() if "uvicorn" in cmd]
        assert server or sig == signal.SIGTERM, _children(proc.pid)
        os.killpg(proc.pid, sig)
        t = time.monotonic()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(proc.communicate()[1].decode()[-3000:])
        took = time.monotonic() - t
    finally:
        proc.kill()
    err = err.decode()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err[-3000:]
    assert err.strip() == "error: interrupted" and took < 30  # SIGTERM printed nothing (docs promised the line)
    deadline = time.monotonic() + 15
    while server and _alive(server[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server or not _alive(server[0])


def test_preflight_checks_weight_specs_but_leaves_their_files_to_the_flow(tmp_path):
    """A finished manifest re-runs after its decoder file is gone (every row is skipped, so nothing needs it):
    before Prefect starts, `stylize run` checks specs only; the flow checks files for the rows still to do."""
    from stylize_cli.main import build_parser
    from stylize_cli.run import preflight

    from stylecore.errors import WeightsError

    path = write_manifest(tmp_path, 1)
    args = build_parser().parse_args(["run", str(path), "--output", str(tmp_path / "out"), *ENGINE_ARGS,
                                      "--decoder", str(tmp_path / "gone.pth")])
    preflight(args)  # no error, and no weights loaded
    args.decoder = "random:x"
    with pytest.raises(WeightsError, match="random:SEED"):
        preflight(args)
