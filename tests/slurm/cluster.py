"""A throw-away single-node SLURM cluster for tests: munge, slurmctld and slurmd from Debian's
packages, started without systemd, with every file (keys, sockets, state, spool, logs) in one
folder, and stopped by the process ids it started.

The node is declared with what the machine really has (its CPUs, most of its memory) plus fake
GPUs (``gres.conf`` entries bound to placeholder files), so SLURM schedules GPU jobs exactly as on
a cluster and sets ``CUDA_VISIBLE_DEVICES`` for them; completed jobs stay visible to
``squeue``/``scontrol`` for an hour (accounting is off).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel", "sacct")
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", *CLIENTS)


class SlurmUnavailable(RuntimeError):
    """Why no cluster can be started here (the tests skip with this text)."""


def missing_commands() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def ensure_installed(log: Path) -> None:
    """Install slurm-wlm and munge with apt when missing: only as root with a working apt."""
    if not missing_commands():
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"slurm-wlm/munge are not installed ({', '.join(missing_commands())} missing) "
                               "and installing them needs root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable("slurm-wlm/munge are not installed and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as out:
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900, check=False)
            if result.returncode != 0:
                raise SlurmUnavailable(f"`{' '.join(command)}` failed (exit {result.returncode}); see {log}")
    if missing_commands():
        raise SlurmUnavailable(f"after installing {PACKAGES}: {', '.join(missing_commands())} still missing")


def _command(name: str) -> str:
    found = shutil.which(name)
    return found if found is not None else str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("no MemTotal in /proc/meminfo")


@dataclass
class LocalSlurm:
    """One node (this host) in two partitions, ``cpu`` (default) and ``gpu``, with ``gpus`` fake GPUs."""

    root: Path
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_mb: int = field(default_factory=lambda: int(_real_memory_mb() * 0.9))
    gpus: int = 1
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment under which SLURM's client commands talk to this cluster.

        Besides ``SLURM_CONF``, ``PATH`` starts with wrappers of the client commands that set it:
        the Snakemake job step drops every ``SLURM_*`` variable before it calls ``srun``, where a
        real cluster finds its ``/etc/slurm/slurm.conf``.
        """
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def write_config(self) -> None:
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        log = self.root / "log"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=sensoriumtest",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'}",
                    f"SlurmUser={_user()}",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={log / 'slurmctld.log'}",
                    f"SlurmdLogFile={log / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "SwitchType=switch/none",
                    "MpiDefault=none",
                    "MailProg=/bin/true",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SlurmdParameters=config_overrides",
                    "ReturnToService=2",
                    "MinJobAge=3600",  # finished jobs stay visible to squeue/scontrol (no accounting)
                    "SchedulerParameters=sched_interval=2",
                    "GresTypes=gpu",
                    (
                        f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
                        f"Gres=gpu:{self.gpus} State=UNKNOWN"
                    ),
                    f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    f"PartitionName=gpu Nodes={self.node} MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        (self.root / "bin").mkdir(exist_ok=True)
        for name in CLIENTS:
            wrapper = self.root / "bin" / name
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(self.conf))} exec {shlex.quote(_command(name))} "$@"\n')
            wrapper.chmod(0o755)
        # one placeholder file per fake GPU (SLURM binds a GPU to a device file; no cgroups here)
        (self.root / "dev").mkdir(exist_ok=True)
        lines = ["AutoDetect=off"]
        for index in range(self.gpus):
            device = self.root / "dev" / f"gpu{index}"
            device.touch()
            lines.append(f"NodeName={self.node} Name=gpu File={device}")
        (self.root / "gres.conf").write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 60) -> None:
        """Start munged, slurmctld and slurmd in the foreground (children of this process)."""
        self.write_config()
        munge = self.root / "munge"
        key = munge / "munge.key"
        subprocess.run([_command("mungekey"), "--create", f"--keyfile={key}", "--force"], check=True,
                       capture_output=True, timeout=30)
        os.chmod(key, 0o600)
        self._spawn("munged", [_command("munged"), "--foreground", "--force", f"--socket={munge / 'munge.socket'}",
                               f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
                               f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"])
        self._wait(lambda: (munge / "munge.socket").exists(), "munged socket", timeout_s)
        self._spawn("slurmctld", [_command("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_command("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self.node_idle, f"node {self.node} idle in sinfo", timeout_s)

    def _spawn(self, name: str, command: list[str]) -> None:
        out = (self.root / "log" / f"{name}.out").open("w")
        self.processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                                cwd=self.root, start_new_session=True)

    def _wait(self, ready, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with {process.returncode} while waiting for {what}; "
                                           f"see {self.root / 'log'}: {self.logs_tail()}")
            if ready():
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"timed out after {timeout_s:.0f}s waiting for {what}: {self.logs_tail()}")

    def node_idle(self) -> bool:
        result = self.run("sinfo", "--noheader", "--format=%T", "--nodes", self.node)
        return result.returncode == 0 and result.stdout.split() != [] and all(
            state.rstrip("*") == "idle" for state in result.stdout.split()
        )

    def run(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        return subprocess.run([_command(command[0]), *command[1:]], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -d`` as a dict of its KEY=VALUE fields."""
        result = self.run("scontrol", "--oneliner", "--details", "show", "job", job_id)
        if result.returncode != 0:
            raise AssertionError(f"scontrol show job {job_id}: {result.stderr}")
        fields: dict[str, str] = {}
        for token in result.stdout.split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def logs_tail(self, chars: int = 3000) -> str:
        texts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(texts)

    def stop(self, timeout_s: float = 20) -> None:
        """Cancel this cluster's jobs, then terminate the daemons this object started, by process id,
        slurmd first."""
        if self.processes.get("slurmctld") is not None and self.processes["slurmctld"].poll() is None:
            self.run("scancel", f"--user={_user()}")
            deadline = time.monotonic() + timeout_s  # their slurmstepd processes outlive slurmd
            while time.monotonic() < deadline and self.run("squeue", "--noheader", "--states=RUNNING,COMPLETING").stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        for pid in self.job_processes():  # job steps whose slurmstepd went with slurmd
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def job_processes(self) -> list[int]:
        """Process ids still running with this cluster's ``SLURM_CONF`` in their environment
        (jobs inherit it), other than this process."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environment = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # gone, or not ours to read
                continue
            if marker in environment:
                found.append(int(entry.name))
        return found


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
