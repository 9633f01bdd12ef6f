"""The Cloud TPU launcher (launch/) against a fake `gcloud` that records its argv."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

from launch import grid as launch_grid
from launch import remote
from launch import tpu

FAKE_GCLOUD = """#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.jsonl"), "a") as f:
  f.write(json.dumps(args) + "\\n")
state = os.path.join(here, "state")
if "describe" in args:
  if os.path.exists(state):
    print(open(state).read().strip())
    sys.exit(0)
  sys.stderr.write("ERROR: (gcloud.compute.tpus) NOT_FOUND: Resource was not found\\n")
  sys.exit(1)
if "create" in args:
  with open(state, "w") as f:
    f.write("ACTIVE" if "queued-resources" in args else "READY")
if "delete" in args and os.path.exists(state):
  os.remove(state)
"""

HOSTILE = """x; touch PWNED1 && echo $(touch PWNED2) `touch PWNED3` 'q' "dq" \\ $HOME > PWNED4"""


class FakeGcloud:
  """A `gcloud` first on PATH that appends each call's argv (JSON) to calls.jsonl."""

  def __init__(self, bin_dir):
    self.bin_dir = bin_dir
    self.calls_file = bin_dir / "calls.jsonl"
    self.state_file = bin_dir / "state"

  def calls(self) -> list[list[str]]:
    if not self.calls_file.exists():
      return []
    return [json.loads(l) for l in self.calls_file.read_text().splitlines()]


@pytest.fixture
def gcloud(tmp_path, monkeypatch):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  path = bin_dir / "gcloud"
  path.write_text(FAKE_GCLOUD.format(python=sys.executable))
  path.chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setattr(remote, "tarball_path", lambda name: str(tmp_path / f"{name}.tar.gz"))
  return FakeGcloud(bin_dir)


def _submit_args(accelerator="v5p-8", name="cell", *extra):
  return ["submit", f"--name={name}", "--zone=us-east5-a", f"--accelerator_type={accelerator}",
          "--workdir=gs://bkt/runs/cell", "--config=configs/tiny.py:pe=p_rope,p=0.75",
          "--config.train.num_steps=20", *extra]


def _run_command(call: list[str]) -> str:
  (cmd,) = [a for a in call if a.startswith("--command=")]
  return cmd[len("--command="):]


def test_single_host_submit(gcloud, tmp_path):
  assert tpu.main(_submit_args("v5p-8")) == 0
  calls = gcloud.calls()
  base = ["compute", "tpus", "tpu-vm"]
  tarball = str(tmp_path / "cell.tar.gz")
  assert [c[:5] for c in calls] == [
      base + ["describe", "cell"], base + ["create", "cell"], base + ["describe", "cell"],
      base + ["scp", tarball], base + ["ssh", "cell"], base + ["ssh", "cell"]]
  assert calls[1] == base + ["create", "cell", "--zone=us-east5-a", "--accelerator-type=v5p-8",
                             "--version=v2-alpha-tpuv5"]
  assert calls[3] == base + ["scp", str(tmp_path / "cell.tar.gz"), "cell:rope_jax_src.tar.gz",
                             "--zone=us-east5-a", "--worker=0"]
  assert calls[4][:7] == base + ["ssh", "cell", "--zone=us-east5-a", "--worker=0"]
  assert "uv pip install" in _run_command(calls[4]) and ".[tpu]" in _run_command(calls[4])
  run = _run_command(calls[5])
  assert calls[5][:7] == base + ["ssh", "cell", "--zone=us-east5-a", "--worker=0"]
  train = run
  argv = shlex.split(train.split("nohup ", 1)[1].split(" >> ")[0])
  assert argv == [".venv/bin/python", "-m", "rope_jax.train",
                  "--config=configs/tiny.py:pe=p_rope,p=0.75", "--workdir=gs://bkt/runs/cell",
                  "--config.train.num_steps=20"]  # One host: no --distributed.
  # The shipped tarball is the repository, without the venv or git.
  with tarfile.open(tmp_path / "cell.tar.gz") as tar:
    names = set(tar.getnames())
  assert {"setup.py", "rope_jax/train.py", "configs/gemma_2b.py", "launch/tpu.py"} <= names
  assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)


def test_multi_host_pod_submit(gcloud):
  assert tpu.main(_submit_args("v5p-32", "pod", "--spot", "--project=my-proj-1")) == 0
  calls = gcloud.calls()
  create = calls[1]
  assert create == ["compute", "tpus", "tpu-vm", "create", "pod", "--zone=us-east5-a",
                    "--project=my-proj-1", "--accelerator-type=v5p-32",
                    "--version=v2-alpha-tpuv5", "--spot"]
  scp, install, run = calls[3], calls[4], calls[5]
  for call in (scp, install, run):
    assert "--worker=all" in call and "--project=my-proj-1" in call
  run_text = _run_command(run)
  assert "--distributed" in shlex.split(run_text.split("nohup ", 1)[1].split(" >> ")[0])


def test_queued_resource_and_resubmit_after_preemption(gcloud):
  assert tpu.main(_submit_args("v6e-16", "qr", "--queued", "--spot",
                               "--zone=us-east5-b")) == 0
  calls = gcloud.calls()
  assert calls[1] == ["compute", "tpus", "queued-resources", "create", "qr", "--zone=us-east5-b",
                      "--node-id=qr", "--accelerator-type=v6e-16",
                      "--runtime-version=v2-alpha-tpuv6e", "--spot"]
  assert calls[2][:4] == ["compute", "tpus", "queued-resources", "describe"]
  assert "--worker=all" in calls[-1]  # v6e-16 is 4 hosts.
  # Preempted: the same submit deletes and recreates it, then starts the trainer again
  # (which resumes from the workdir's latest checkpoint).
  gcloud.state_file.write_text("SUSPENDED")
  gcloud.calls_file.unlink()
  assert tpu.main(_submit_args("v6e-16", "qr", "--queued", "--spot", "--zone=us-east5-b")) == 0
  verbs = [c[2:4] for c in gcloud.calls()]
  assert verbs[:4] == [["queued-resources", "describe"], ["queued-resources", "delete"],
                       ["queued-resources", "create"], ["queued-resources", "describe"]]
  assert gcloud.calls()[1][-2:] == ["--force", "--quiet"]
  assert verbs[-1] == ["tpu-vm", "ssh"]
  # A ready VM is reused.
  gcloud.calls_file.unlink()
  assert tpu.main(_submit_args("v6e-16", "qr", "--queued", "--spot", "--zone=us-east5-b")) == 0
  assert not any("create" in c for c in gcloud.calls())


def test_preempted_spot_vm_is_recreated(gcloud):
  gcloud.state_file.write_text("PREEMPTED")
  assert tpu.main(_submit_args("v5p-8", "cell", "--spot")) == 0
  verbs = [c[3] for c in gcloud.calls()]
  assert verbs == ["describe", "delete", "create", "describe", "scp", "ssh", "ssh"]


def test_check_fit_dry_run_prints_the_aot_command(gcloud, capsys):
  assert tpu.main(_submit_args("v5p-32", "pod", "--check_fit", "--dry-run")) == 0
  first = capsys.readouterr().out.splitlines()[0]
  assert shlex.split(first)[1:] == [
      "-m", "rope_jax.aot", "--config=configs/tiny.py:pe=p_rope,p=0.75", "--topology=v5p:2x2x4",
      "--config.train.num_steps=20"]


def test_dry_run_prints_the_exact_commands_and_runs_nothing(gcloud, capsys):
  assert tpu.main(_submit_args("v5p-32", "pod", "--dry-run")) == 0
  printed = [shlex.split(l) for l in capsys.readouterr().out.splitlines()
             if l.startswith("gcloud ")]
  assert gcloud.calls() == []
  assert tpu.main(_submit_args("v5p-32", "pod")) == 0
  executed = [c for c in gcloud.calls() if "describe" not in c]
  assert [p[1:] for p in printed] == executed


def test_hostile_override_is_data_not_code(gcloud, tmp_path):
  args = _submit_args("v5p-32", "pod") + [f"--override=config.data.task={HOSTILE}",
                                          "--workdir=gs://bkt/runs/a_b=1"]
  assert tpu.main(args) == 0
  run = _run_command(gcloud.calls()[-1])
  assert run.count("touch PWNED1") == 1  # Only inside the one quoted word.
  assert run.count(shlex.quote(f"--config.data.task={HOSTILE}")) == 1
  # Execute the command as the worker's shell would, with a fake trainer that records argv.
  sandbox = tmp_path / "home"
  (sandbox / "rope_jax" / ".venv" / "bin").mkdir(parents=True)
  fake = sandbox / "rope_jax" / ".venv" / "bin" / "python"
  fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                  "open('argv.json', 'w').write(json.dumps(sys.argv[1:]))\n")
  fake.chmod(0o755)
  env = {"PATH": os.environ["PATH"], "HOME": str(sandbox)}
  p = subprocess.run(["bash", "-c", run], cwd=sandbox, env=env, capture_output=True, text=True,
                     timeout=20)
  assert p.returncode == 0, p.stderr
  recorded = sandbox / "rope_jax" / "argv.json"
  for _ in range(200):
    if recorded.exists() and recorded.read_text():
      break
    time.sleep(0.05)
  argv = json.loads(recorded.read_text())
  assert argv == ["-m", "rope_jax.train", "--config=configs/tiny.py:pe=p_rope,p=0.75",
                  "--workdir=gs://bkt/runs/a_b=1", "--distributed",
                  "--config.train.num_steps=20", f"--config.data.task={HOSTILE}"]
  leftovers = [f for d in (sandbox, sandbox / "rope_jax", tmp_path) for f in os.listdir(d)
               if f.startswith("PWNED")]
  assert leftovers == []
  # A second start while the trainer runs is refused (pid file names a live process).
  (sandbox / "rope_jax" / "logs" / "train.pid").write_text(str(os.getpid()))
  p = subprocess.run(["bash", "-c", run], cwd=sandbox, env=env, capture_output=True, text=True,
                     timeout=20)
  assert p.returncode == 1 and "already running" in p.stderr


@pytest.mark.parametrize("change, message", [
    ({"--accelerator_type": "v5p-7"}, "not a valid v5p slice size"),
    ({"--accelerator_type": "tpu-9000"}, "Unknown accelerator type"),
    ({"--accelerator_type": "v5e-8"}, "use v5litepod-8"),
    ({"--zone": "us-east5"}, "not a zone name"),
    ({"--zone": "US-EAST5-A"}, "not a zone name"),
    ({"--workdir": "/tmp/run"}, "no shared disk"),
    ({"--workdir": "gs:/bkt/x"}, "not a gs://bucket/path"),
    ({"--workdir": "gs://BUCKET/x"}, "bucket name must be"),
    ({"--name": "Bad_Name"}, "not a valid TPU name"),
    ({"--config": "configs/nope.py"}, "does not exist"),
    ({"--config": "configs/tiny.py:pe=bogus"}, "Unknown pe="),
    ({"--config.train.num_stepz": "5"}, "Unknown config key 'train.num_stepz'"),
    ({"--config": "configs/gemma_2b.py"}, "needs Gemma's tokenizer"),
])
def test_errors_before_any_gcloud_call(gcloud, capsys, change, message):
  flags = dict(a.split("=", 1) for a in _submit_args()[1:])
  flags.update(change)
  assert tpu.main(["submit"] + [f"{k}={v}" for k, v in flags.items()]) == 2
  assert message in capsys.readouterr().err
  assert gcloud.calls() == []


def test_missing_gcloud_is_a_clear_error(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path))  # No gcloud anywhere.
  assert tpu.main(_submit_args()) == 2
  err = capsys.readouterr().err
  assert "`gcloud` was not found on PATH" in err and "cloud.google.com/sdk/docs/install" in err
  # --dry-run only prints, so it works without gcloud.
  assert tpu.main(_submit_args("v5p-8", "cell", "--dry-run")) == 0


def test_accelerators():
  cases = {"v5p-8": (1, "v5p:2x2x1"), "v5p-16": (2, "v5p:2x2x2"), "v5p-32": (4, "v5p:2x2x4"),
           "v5p-128": (16, "v5p:4x4x4"), "v4-8": (1, "v4:2x2x1"), "v5litepod-8": (1, "v5e:2x4"),
           "v5litepod-16": (4, "v5e:4x4"), "v6e-4": (1, "v6e:2x2"), "v6e-256": (64, "v6e:16x16"),
           "v5p-24": (3, None)}
  for name, (hosts, topology) in cases.items():
    acc = tpu.parse_accelerator(name)
    assert (acc.hosts, acc.aot_topology) == (hosts, topology), name
  assert tpu.parse_accelerator("v4-32").default_runtime_version == "tpu-ubuntu2204-base"
  assert tpu.check_zone("us-central1-a", tpu.parse_accelerator("v4-8"))  # Warns: v4 lives in
  assert not tpu.check_zone("us-central2-b", tpu.parse_accelerator("v4-8"))  # us-central2-b.


def test_logs_stop_delete(gcloud):
  common = ["--name=pod", "--zone=us-east5-a"]
  assert tpu.main(["logs", *common, "--follow", "--lines=50"]) == 0
  assert tpu.main(["stop", *common, "--accelerator_type=v5p-32"]) == 0
  assert tpu.main(["delete", *common]) == 0
  assert tpu.main(["delete", *common, "--queued"]) == 0
  logs, stop, delete, delete_qr = gcloud.calls()
  assert logs == ["compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=us-east5-a", "--worker=0",
                  "--command=tail -n 50 -F rope_jax/logs/train.log"]
  assert "--worker=all" in stop and "kill -TERM" in _run_command(stop)
  assert delete == ["compute", "tpus", "tpu-vm", "delete", "pod", "--zone=us-east5-a", "--quiet"]
  assert delete_qr == ["compute", "tpus", "queued-resources", "delete", "pod",
                       "--zone=us-east5-a", "--force", "--quiet"]


def test_grid_submit_dry_run_covers_the_14_cells(gcloud, capsys):
  assert launch_grid.main([
      "submit", "--root=gs://bkt/t2", "--zone=us-east5-a", "--accelerator_type=v5p-32", "--spot",
      "--config.data.vocab_path=gs://bkt/tokenizer.model",
      "--config.data.tfds_data_dir=gs://bkt/tfds", "--dry-run"]) == 0
  out = capsys.readouterr().out.splitlines()
  creates = [shlex.split(l) for l in out if l.startswith("gcloud compute tpus tpu-vm create")]
  runs = [shlex.split(l) for l in "\n".join(out).split("\ngcloud ")
          if "rope_jax.train" in l]
  assert len(creates) == 14 and len({c[5] for c in creates}) == 14
  assert "t2-p075-rope-flan-v2" in {c[5] for c in creates}
  assert len(runs) == 14
  joined = "\n".join(out)
  assert "--config=configs/gemma_2b.py:pe=reversed,p=0.75,data=flan_v2" in joined
  assert "--workdir=gs://bkt/t2/flan_v2/p075-reversed" in joined
  assert gcloud.calls() == []


def test_grid_subset_and_errors(gcloud, capsys):
  assert launch_grid.main(["delete", "--zone=us-east5-a", "--cells=nope-wiki,p075-rope-wiki",
                           "--queued"]) == 0
  assert [c[4] for c in gcloud.calls()] == ["t2-nope-wiki", "t2-p075-rope-wiki"]
  assert launch_grid.main(["submit", "--root=/local/dir", "--zone=us-east5-a",
                           "--accelerator_type=v5p-32", "--cells=nope-wiki"]) == 2
  assert "gs://" in capsys.readouterr().err
  assert launch_grid.main(["status", "--zone=us-east5-a", "--cells=nope-c4"]) == 2
  assert "Unknown cell" in capsys.readouterr().err
  assert len(gcloud.calls()) == 2
