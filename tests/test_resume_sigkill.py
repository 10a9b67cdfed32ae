"""Kill a real `anomalykit run` with SIGKILL mid-epoch, resume it, and get the uninterrupted result."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from anomalykit.checkpoint import safe_load

RUN = [sys.executable, "-m", "anomalykit.cli", "run", "ama", "--data", "digits", "--epochs", "25",
       "--checkpoint-every", "1", "-q", "--set", "width=8", "--set", "n_critic=2", "--set", "feature_dim=16"]


def start(out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([*RUN, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)["nets"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    victim = start(tmp_path / "killed")
    state_file = tmp_path / "killed" / "train_state-train.pt"
    step = 0
    while victim.poll() is None:  # no wall-clock deadline: on a loaded machine the 5 steps just come later
        if state_file.exists():
            try:
                step = safe_load(state_file, kind="train-state")["step"]
            except Exception:  # noqa: BLE001 -- never half-written, but be robust to a race on rename
                step = 0
            if step >= 5:
                break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed; make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    killed = tmp_path / "killed"
    assert not (killed / "metrics.json").exists()  # an unfinished run does not look complete
    assert safe_load(state_file, kind="train-state")["step"] >= 5  # the checkpoint survived the kill intact

    resumed = subprocess.run([sys.executable, "-m", "anomalykit.cli", "run", "--resume", str(killed), "-q"],
                             capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert resumed.returncode == 0, resumed.stderr
    reference = start(tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()

    a, b = weights(killed), weights(tmp_path / "reference")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (killed / "metrics.json").exists() and not list(killed.glob("train_state-*.pt"))
