"""The workflow on a real SLURM cluster through workflow/profiles/slurm.

A single-node cluster (Debian's slurm-wlm and munge, two fake GPUs in gres.conf) runs the tiny
end-to-end config while a local run of the same config goes on beside it. Meanwhile the test
preempts one training job (``scontrol requeue``) and kills the other (``scancel``), each once it
has written its first checkpoint: the first must come back under the same job id and resume,
the second must be reported with its logs and resubmitted with more memory and time, and resume.
Both runs must then agree on every prediction and score. Skipped, with the reason, where SLURM
cannot be installed or run (not root, no apt) or the executor plugin is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm.cluster import LocalSlurm, SlurmUnavailable, ensure_installed
from slurm.compare import differences
from slurm.fit import fitted_set_resources
from test_workflow import planned_jobs

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = str(ROOT / "workflow/Snakefile")
PROFILE = "workflow/profiles/slurm"
TINY = ROOT / "tests/configs/tiny.yaml"
MODEL = "tiny"
#: epochs of the test's training jobs: enough for a job to be caught between two checkpoints
EPOCHS = 4
GPU_RULES = {"train", "predict"}
CLUSTER_RULES = {"simulate", "download", "convert", "train", "predict", "evaluate"}
LOCAL_RULES = {"ensemble", "submission"}
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


@dataclass
class Submission:
    job_id: str
    rule: str
    wildcards: str
    log: Path


@dataclass
class Runs:
    cluster: LocalSlurm
    slurm_dir: Path
    local_dir: Path
    returncode: int
    output: str
    local_returncode: int
    local_output: str
    submissions: list[Submission]
    preempted: str  # SLURM job id of the requeued training job (fold 0)
    killed: str  # SLURM job id of the cancelled training job (fold 1)
    seconds: float


def snakemake(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", SNAKEFILE, *args]


def write_config(base: Path) -> Path:
    """The tiny config, with its model training for EPOCHS epochs (no early stop)."""
    models = base / "models"
    models.mkdir()
    model = yaml.safe_load((ROOT / "tests/configs/models" / f"{MODEL}.yaml").read_text())
    model["training"].update(max_epochs=EPOCHS, patience=EPOCHS + 1)
    (models / f"{MODEL}.yaml").write_text(yaml.safe_dump(model))
    config = yaml.safe_load(TINY.read_text())
    config["model_dir"] = str(models)
    assert config["models"] == [MODEL] and config["training"]["n_folds"] == 2
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm is not installed")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd and munged must run as root")
    root = tmp_path_factory.mktemp("slurm")
    try:
        ensure_installed(root / "apt.log")
    except SlurmUnavailable as error:
        pytest.skip(f"no SLURM cluster can be started here: {error}")
    cluster = LocalSlurm(root / "cluster", gpus=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def running_train_job(cluster: LocalSlurm, fold: int) -> str | None:
    """SLURM id of the running training job of ``fold`` (the plugin puts rule and wildcards in the comment)."""
    result = cluster.run("squeue", "--noheader", "--states=RUNNING", "--format=%i|%k")
    for line in result.stdout.splitlines():
        job_id, _, comment = line.partition("|")
        if comment.strip() == f"rule_train_wildcards_{MODEL}_{fold}":
            return job_id.strip()
    return None


def preempt(cluster: LocalSlurm, job_id: str, timeout_s: float = 60) -> None:
    """Requeue a running job as a preemption does; then let it start again at once (SLURM would
    hold it back for a couple of minutes)."""
    assert cluster.run("scontrol", "requeue", job_id).returncode == 0
    deadline = time.monotonic() + timeout_s
    while cluster.job(job_id)["JobState"] != "PENDING":
        assert time.monotonic() < deadline, f"job {job_id} was not requeued"
        time.sleep(0.2)
    assert cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now").returncode == 0


def interrupt_training(cluster: LocalSlurm, workdir: Path, process: subprocess.Popen, timeout_s: float) -> dict[int, str]:
    """Preempt fold 0's training job and cancel fold 1's, each once its first checkpoint exists."""
    done: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline and len(done) < 2:
        for fold in (0, 1):
            if fold in done or not list(workdir.glob(f"results/checkpoints/{MODEL}/fold{fold}/*/last.pt")):
                continue
            job_id = running_train_job(cluster, fold)
            if job_id is None:
                continue
            if fold == 0:
                preempt(cluster, job_id)
            else:
                assert cluster.run("scancel", job_id).returncode == 0
            done[fold] = job_id
        time.sleep(0.2)
    return done


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> Runs:
    base = tmp_path_factory.mktemp("runs")
    configfile = write_config(base)
    slurm_dir, local_dir = base / "slurm", base / "local"
    started = time.monotonic()
    with open(base / "local.out", "w") as local_out:
        local = subprocess.Popen(
            snakemake("--cores", "2", "-d", str(local_dir), "--configfile", str(configfile)),
            cwd=ROOT, stdout=local_out, stderr=subprocess.STDOUT, text=True,
        )
        try:
            with open(base / "slurm.out", "w") as slurm_out:
                process = subprocess.Popen(
                    snakemake(
                        "-d", str(slurm_dir), "--workflow-profile", PROFILE, "--jobs", "4",
                        # accounting is off on the test cluster: squeue answers for finished jobs
                        "--slurm-status-command", "squeue",
                        # first status check after 12 s (about one short job here), then 10 s
                        # later each time nothing has finished (the plugin's back-off)
                        "--slurm-init-seconds-before-status-checks", "12",
                        "--slurm-keep-successful-logs",
                        "--set-resources", *fitted_set_resources(ROOT / PROFILE, cluster.cpus, mem_cap_mb=4000),
                        "--configfile", str(configfile),
                    ),
                    cwd=ROOT, env=cluster.env, stdout=slurm_out, stderr=subprocess.STDOUT, text=True,
                )
                try:
                    interrupted = interrupt_training(cluster, slurm_dir, process, timeout_s=500)
                    returncode = process.wait(timeout=600)
                finally:
                    if process.poll() is None:
                        process.kill()
                        process.wait()
            local_returncode = local.wait(timeout=600)
        finally:
            if local.poll() is None:
                local.kill()
                local.wait()
    output = (base / "slurm.out").read_text()
    submissions = [
        Submission(job_id, Path(log).parent.parent.name.removeprefix("rule_"), Path(log).parent.name, Path(log))
        for _, job_id, log in SUBMITTED.findall(output)
    ]
    return Runs(
        cluster, slurm_dir, local_dir, returncode, output, local_returncode, (base / "local.out").read_text(),
        submissions, interrupted.get(0, ""), interrupted.get(1, ""), time.monotonic() - started,
    )


def succeeded(runs: Runs) -> None:
    tail = runs.output[-6000:] + "\n" + runs.cluster.logs_tail(1500)
    assert runs.returncode == 0, tail
    assert runs.preempted and runs.killed, "no training job was caught between two checkpoints\n" + tail


@pytest.mark.slow
def test_every_job_but_the_light_rules_runs_as_a_slurm_job(runs):
    succeeded(runs)
    planned = planned_jobs(runs.output)
    submitted = Counter(s.rule for s in runs.submissions if s.job_id != runs.killed)
    assert CLUSTER_RULES <= set(submitted), submitted
    for rule, count in submitted.items():
        assert planned[rule] == count, (rule, planned, submitted)  # each job of the rule: one SLURM job
    local = set(planned) - set(submitted)
    assert LOCAL_RULES <= local and not CLUSTER_RULES & local, local
    for submission in runs.submissions:
        job = runs.cluster.job(submission.job_id)
        expected = "CANCELLED" if submission.job_id == runs.killed else "COMPLETED"
        assert job["JobState"] == expected, (submission, job)
        assert job["Comment"].startswith(f"rule_{submission.rule}")
        assert submission.log.name == f"{submission.job_id}.log"
        assert f"rule {submission.rule}:" in submission.log.read_text()


@pytest.mark.slow
def test_gpu_rules_get_a_gpu_from_slurm_and_run_side_by_side(runs):
    succeeded(runs)
    spans = []
    for submission in runs.submissions:
        job = runs.cluster.job(submission.job_id)
        gpu = "gres:gpu:1" in job.get("TresPerJob", "")
        if submission.rule in GPU_RULES:
            assert job["Partition"] == "gpu" and gpu and job.get("JOB_GRES") == "gpu:1", (submission, job)
            spans.append((job["StartTime"], job["EndTime"]))
        else:
            assert job["Partition"] == "cpu" and not gpu, (submission, job)
    # many GPU jobs at once: the profile sets no cap, SLURM hands out the node's two GPUs
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:]), spans


def minutes(limit: str) -> int:
    """SLURM's [D-]HH:MM:SS as minutes."""
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


def train_log(runs: Runs, fold: int) -> str:
    return (runs.slurm_dir / "results" / "logs" / "train" / MODEL / f"fold{fold}.log").read_text()


def epochs(runs: Runs, fold: int) -> list[int]:
    return pd.read_csv(runs.slurm_dir / "results" / "models" / MODEL / f"fold{fold}" / "metrics.csv")["epoch"].tolist()


@pytest.mark.slow
def test_a_preempted_training_job_is_requeued_and_resumes_from_its_checkpoint(runs):
    succeeded(runs)
    job = runs.cluster.job(runs.preempted)
    assert job["Restarts"] == "1" and job["JobState"] == "COMPLETED", job
    fold0 = [s for s in runs.submissions if s.rule == "train" and s.wildcards == f"{MODEL}_0"]
    assert [s.job_id for s in fold0] == [runs.preempted]  # the same job, not a new submission
    assert "resumed from" in train_log(runs, 0)
    assert epochs(runs, 0) == list(range(EPOCHS))


@pytest.mark.slow
def test_a_failed_job_is_reported_with_its_logs_and_retried_with_more_memory_and_time(runs):
    succeeded(runs)
    fold1 = [s for s in runs.submissions if s.rule == "train" and s.wildcards == f"{MODEL}_1"]
    assert len(fold1) == 2 and fold1[0].job_id == runs.killed, fold1
    failed, retried = fold1
    report = re.search(rf"Error in rule train:\n\s+message: SLURM-job '{failed.job_id}' failed, SLURM status is: "
                       r"'CANCELLED'.*?\n\s+log: (.*?)\n", runs.output, re.DOTALL)
    assert report is not None, runs.output[-6000:]
    assert str(failed.log) in report.group(1) and f"results/logs/train/{MODEL}/fold1.log" in report.group(1)
    assert failed.log.exists()
    first, second = runs.cluster.job(failed.job_id), runs.cluster.job(retried.job_id)
    assert second["JobState"] == "COMPLETED", second
    assert int(second["MinMemoryNode"].rstrip("M")) == 2 * int(first["MinMemoryNode"].rstrip("M"))
    assert minutes(second["TimeLimit"]) > minutes(first["TimeLimit"]), (first["TimeLimit"], second["TimeLimit"])
    assert "resumed from" in train_log(runs, 1)
    assert epochs(runs, 1) == list(range(EPOCHS))


@pytest.mark.slow
def test_outputs_equal_those_of_a_local_run(runs):
    succeeded(runs)
    assert runs.local_returncode == 0, runs.local_output[-4000:]
    assert differences(runs.slurm_dir, runs.local_dir) == []


def dry_run_resources(*args: str) -> dict[str, dict[str, str]]:
    """The resources a dry run plans for each rule (the first job of each)."""
    models = ROOT / "tests/configs/models"
    result = subprocess.run(
        snakemake("-n", *args, "--config", f"model_dir={models}", "--configfile", str(TINY)),
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    planned: dict[str, dict[str, str]] = {}
    for rule, resources in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$",
                                      result.stdout + result.stderr, re.MULTILINE):
        planned.setdefault(rule, dict(item.split("=", 1) for item in resources.split(", ")))
    return planned


def test_the_profiles_give_gpu_rules_a_gpu_and_the_cluster_its_partitions(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm is not installed")
    cluster = dry_run_resources("-d", str(tmp_path / "cluster"), "--workflow-profile", PROFILE)
    for rule in GPU_RULES:
        assert cluster[rule]["slurm_partition"] == "gpu" and cluster[rule]["gpu"] == "1", cluster[rule]
    assert cluster["train"]["runtime"] == "1440" and cluster["train"]["mem_mb"] == "64000"
    for rule in CLUSTER_RULES - GPU_RULES:
        assert cluster[rule]["slurm_partition"] == "cpu" and "gpu" not in cluster[rule], cluster[rule]
    workstation = dry_run_resources("-d", str(tmp_path / "workstation"), "--cores", "2")  # the default profile
    assert all(workstation[rule]["gpu"] == "1" for rule in GPU_RULES)
    assert not any("slurm_partition" in resources for resources in workstation.values())
