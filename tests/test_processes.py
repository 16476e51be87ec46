"""Real processes: kills and signals at several points, idle ranks under DDP, 2 processes = 1 byte for byte.

Every comparison is of every file the run leaves (by hash), except the lock file, TensorBoard's logs,
the ``seconds`` timings in metrics.json / metrics.csv and the ``output:`` line of config.yaml.
"""

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dwgf.cli import main
from dwgf.outputs import LOCK_FILE
from dwgf.testing import make_images

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"
PAUSE = ROOT / "tests/pause_run.py"
NAMES = [f"img{i}" for i in range(5)]


@pytest.fixture(scope="module")
def five_images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("five"), count=5, sizes=((32, 32), (40, 36)), mode="L")


def args(ldm_path, images, out, *extra) -> list[str]:
    return ["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(images),
            "--output", str(out), "--trainer.logger", "false", *map(str, extra)]


def env(threads: bool = True) -> dict[str, str]:
    """The test process's environment; with ``threads``, pinned to this (pytest) process's thread count;
    without, as a user has it (no OMP_NUM_THREADS unless the user's environment sets it)."""
    e = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if threads:
        e["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return e


def _without_seconds(path: Path) -> bytes:
    if path.name == "metrics.json":
        rec = json.loads(path.read_text())
        rec.pop("seconds", None)
        return json.dumps(rec, sort_keys=True).encode()
    if path.name == "config.yaml":  # the same but for the --output it names
        return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("output:")).encode()
    if path.name == "metrics.csv":
        rows = list(csv.reader(io.StringIO(path.read_text())))
        keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
        return "\n".join(",".join(r[i] for i in keep) for r in rows).encode()
    return path.read_bytes()


def fingerprint(out: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Hash of every file of the output folder (recursively), timings and the output path left out."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_dir() or rel.parts[0] == "tensorboard" or path.name == LOCK_FILE or str(rel) in skip:
            continue
        files[str(rel)] = hashlib.sha256(_without_seconds(path)).hexdigest()
    return files


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended ({proc.returncode}) before {path.name}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie (exited, not yet reaped by its dead parent's reaper) counts as gone
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def reference(ldm_path, five_images, tmp_path_factory):
    """An uninterrupted run, in this process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    main(args(ldm_path, five_images, out))
    return fingerprint(out)


POINTS = ["first-item", "between-items", "during-write", "after-last-item"]
# the default suite kills at two points (each kill starts dwgf anew, ~6 s); -m slow runs the other six
DEFAULT_KILLS = {("during-write", signal.SIGKILL), ("between-items", signal.SIGTERM)}
KILLS = [pytest.param(point, sig, id=f"{point}-{sig.name}", marks=() if (point, sig) in DEFAULT_KILLS else pytest.mark.slow)
         for point in POINTS for sig in (signal.SIGKILL, signal.SIGTERM)]


@pytest.mark.parametrize("point,sig", KILLS)
def test_killed_then_rerun_equals_an_uninterrupted_run(ldm_path, five_images, reference, tmp_path, point, sig):
    out, sentinels = tmp_path / "out", tmp_path / "sentinels"
    proc = subprocess.Popen([sys.executable, str(PAUSE), point, str(sentinels), *args(ldm_path, five_images, out)],
                            env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(sentinels / "0.pid", proc)
    proc.send_signal(sig)
    rc = proc.wait(timeout=180)
    err = proc.stderr.read()
    complete = sorted(p.parent.name for p in out.glob("*/.dwgf-item.json") if json.loads(p.read_text())["state"] == "complete")
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    elif point == "after-last-item":  # the work was done: the run finishes
        assert rc == 0, err[-3000:]
    else:
        assert rc == 128 + signal.SIGTERM, err[-3000:]
        assert err.strip().splitlines()[-1] == ("dwgf: stopped by SIGTERM; finished items are kept: run the same command again to resume")
        # stopped cleanly after the iteration: finished batches stay complete, the cut batch was not written
        expected = {"first-item": [], "between-items": ["img0", "img1"], "during-write": ["img0", "img1"]}[point]
        assert complete == expected
    if point == "during-write" and sig == signal.SIGKILL:
        assert list(out.rglob(".mean.png.dwgf-tmp*")), "the kill left the temporary file of the write it interrupted"
    main(args(ldm_path, five_images, out))  # the same command again
    assert fingerprint(out) == reference
    assert not [p for p in out.rglob("*") if ".dwgf-tmp" in p.name]  # interrupted writes are cleaned up


DEVICES = ("config.yaml",)  # it records the trainer's devices and strategy, which differ by design


def two_process_args(ldm_path, images, out, *extra) -> list[str]:
    return [sys.executable, "-m", "dwgf", *args(ldm_path, images, out, "--trainer.accelerator", "cpu", *extra)]


def test_two_processes_with_an_idle_one_are_byte_identical_to_one_by_default(ldm_path, five_images, tmp_path):
    """DDP on CPU (gloo) as a user starts it (no OMP_NUM_THREADS): 5 images in one batch of 8 for two
    processes, so rank 1 has nothing to do and must wait; every file identical to a one-process run."""
    one, two = tmp_path / "one", tmp_path / "two"
    # the one-process run is this process's (torch's default thread count, as a user's dwgf has: conftest.py)
    main(args(ldm_path, five_images, one, "--trainer.accelerator", "cpu", "--data.batch_size", 8))
    run = subprocess.run(two_process_args(ldm_path, five_images, two, "--trainer.devices", 2, "--trainer.strategy", "ddp",
                                          "--data.batch_size", 8), env=env(threads=False), cwd=ROOT, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert fingerprint(two, skip=DEVICES) == fingerprint(one, skip=DEVICES)
    with open(two / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == NAMES  # every item exactly once


def test_two_processes_with_mixed_sizes_and_prompts_equal_one(sd_path, tmp_path):
    """fit: keep with three image sizes, per-item prompts and guidance, batches of 2 of one size dealt to two
    processes: every file identical to a one-process run."""
    images = make_images(tmp_path / "mixed", count=5, sizes=((34, 50), (40, 40), (34, 50), (40, 40), (28, 36)))
    (images / "prompts.csv").write_text("name,prompt\nimg0,a wide pattern\nimg3,a square pattern\n")
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["predict", "--config", ROOT / "configs/sd15/box_inpaint.yaml", "--model.prior.pretrained", sd_path, "--model.num_steps", 2,
              "--model.num_particles", 2, "--model.prior.guidance_scale", 2, "--data.fit", "keep", "--data.batch_size", 2,
              "--data.images", images, "--trainer.logger", "false", "--trainer.accelerator", "cpu"]
    main([str(a) for a in [*common, "--output", one]])
    run = subprocess.run([sys.executable, "-m", "dwgf", *map(str, common), "--output", str(two), "--trainer.devices", "2",
                          "--trainer.strategy", "ddp"], env=env(threads=False), cwd=ROOT, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert fingerprint(two, skip=DEVICES) == fingerprint(one, skip=DEVICES)
    with open(two / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == [f"img{i}" for i in range(5)]


def reference_with(ldm_path, images, out) -> dict[str, str]:
    """An uninterrupted run in this process (this process's thread count), as the fingerprint DDP tests compare."""
    main(args(ldm_path, images, out, "--trainer.accelerator", "cpu"))
    return fingerprint(out, skip=DEVICES)


def test_a_resume_that_leaves_a_process_idle_completes_and_equals_an_uninterrupted_run(ldm_path, five_images, tmp_path):
    """Batches of 2: batches 0 and 1 done here, in this process; two processes resume and rank 1 has nothing left."""
    resumed = tmp_path / "resumed"
    main(args(ldm_path, five_images, resumed, "--trainer.accelerator", "cpu", "--trainer.limit_predict_batches", 2))
    run = subprocess.run(two_process_args(ldm_path, five_images, resumed, "--trainer.devices", 2, "--trainer.strategy", "ddp"),
                         env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert fingerprint(resumed, skip=DEVICES) == reference_with(ldm_path, five_images, tmp_path / "ref")


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_launcher_takes_its_ranks_down(ldm_path, five_images, tmp_path, sig):
    out, sentinels = tmp_path / "out", tmp_path / "sentinels"
    proc = subprocess.Popen([sys.executable, str(PAUSE), "first-item", str(sentinels),
                             *args(ldm_path, five_images, out, "--trainer.accelerator", "cpu", "--trainer.devices", 2, "--trainer.strategy", "ddp")],
                            env=env(threads=False), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(sentinels / "0.pid", proc)
    wait_for(sentinels / "1.pid", proc)
    rank1 = int((sentinels / "1.pid").read_text())
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM)
    assert gone(rank1, 60), "rank 1 still runs after its launcher ended"
    assert not list(out.glob("*/mean.png"))  # nobody went on writing


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_this_machine_are_byte_identical_to_one_process(ldm_path, five_images, tmp_path):
    """Two Lightning "nodes" of one process each, started by hand as a cluster's launcher would (NODE_RANK,
    MASTER_ADDR, MASTER_PORT, WORLD_SIZE per process), write one output folder equal to a one-process run."""
    one, two = tmp_path / "one", tmp_path / "two"
    main(args(ldm_path, five_images, one, "--trainer.accelerator", "cpu", "--data.batch_size", 2))
    port = str(_free_port())
    procs = []
    for node in (0, 1):
        node_env = {**env(threads=False), "NODE_RANK": str(node), "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                    "WORLD_SIZE": "2"}
        procs.append(subprocess.Popen(two_process_args(ldm_path, five_images, two, "--trainer.num_nodes", 2, "--trainer.devices", 1,
                                                       "--trainer.strategy", "ddp", "--data.batch_size", 2),
                                      env=node_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for node, proc in enumerate(procs):
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert f"GLOBAL_RANK: {node}, MEMBER: {node + 1}/2" in err  # one process group of two, not two runs of one
    assert fingerprint(two, skip=DEVICES) == fingerprint(one, skip=DEVICES)
    with open(two / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == NAMES
