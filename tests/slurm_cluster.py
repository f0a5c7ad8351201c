"""A real single-node Slurm on localhost for the workflow tests: munge, slurmctld, slurmd.

Everything lives in one temporary folder: the munge key and socket, slurm.conf, gres.conf,
state, spool, logs and two fake GPUs (character devices cloned from /dev/null, which Slurm
accepts as gres `File=`). The daemons run in the foreground as children of the test, on free
ports, so that several clusters can run side by side and each is stopped by its own pid.
Facts behind the settings: /work/shared/notes/slurm-local.md.

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env)
"""

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")

SLURM_CONF = """\
ClusterName=uniscene-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job that asks no memory takes the whole node
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue must still list finished jobs when the Snakemake plugin polls, and the tests read every
# job of a run (`scontrol show job`) after it ends, which can take minutes on a loaded machine
MinJobAge=3600
ReturnToService=2
# the node is what this file says (CPUs, memory), not what slurmd counts on this host
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName=localhost CPUs={cpus} RealMemory={mem_mb} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
"""


def missing_commands() -> list[str]:
    return [name for name in DAEMONS + CLIENTS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def ensure_installed() -> str | None:
    """Install slurm-wlm and munge with the project's own script when missing.

    Returns None when Slurm can run here, else the reason it cannot (for pytest.skip).
    """
    if not missing_commands():
        return None if os.geteuid() == 0 else "the test Slurm runs its daemons as root and munged as munge: run as root"
    if os.geteuid() != 0:
        return f"slurm-wlm/munge are not installed ({', '.join(missing_commands())} missing) and installing needs root"
    subprocess.run([str(REPO / "tools" / "install-system-packages")], check=True)
    missing = missing_commands()
    return f"tools/install-system-packages left {', '.join(missing)} missing" if missing else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_memory_mb() -> int:
    """Memory the node offers: 90 % of this host's, at least 16 GB (rules ask up to 8 GB)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(int(line.split()[1]) // 1024 * 9 // 10, 16000)
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """Brings up munged, slurmctld and `slurmd -N localhost`; `stop()` ends each by its pid."""

    def __init__(self, gpus: int = 2, cpus: int | None = None, mem_mb: int | None = None, start_timeout_s: float = 30.0):
        self.gpus = gpus
        # More CPUs than a small host has, so that independent jobs (a 2-thread GPU rule and a CPU
        # rule) overlap instead of queueing behind each other's polling intervals.
        self.cpus = cpus or max(os.cpu_count() or 1, 4)
        # Memory is a scheduling figure here (no cgroups enforce it): the node may claim more than
        # the host has where the jobs are known to be small.
        self.mem_mb = mem_mb or _node_memory_mb()
        self.start_timeout_s = start_timeout_s
        self.root: Path | None = None
        self.processes: dict[str, subprocess.Popen] = {}

    # 1. files
    def _write_files(self) -> None:
        # Short path (the munge socket must fit in 108 bytes) that the munge user can traverse.
        self.root = Path(tempfile.mkdtemp(prefix="uniscene-slurm-"))
        self.root.chmod(0o755)
        for sub in ("state", "spool", "run", "log", "dev", "bin"):
            (self.root / sub).mkdir()
        munge_dir = self.root / "munge"
        munge_dir.mkdir()
        munge_dir.chmod(0o711)  # munged wants its socket's folder searchable by all
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        shutil.chown(munge_dir, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        for index in range(self.gpus):
            os.mknod(self.root / "dev" / f"fakegpu{index}", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null
        (self.root / "slurm.conf").write_text(
            SLURM_CONF.format(
                root=self.root, ctld_port=_free_port(), slurmd_port=_free_port(), cpus=self.cpus,
                mem_mb=self.mem_mb, gpus=self.gpus, munge_socket=self.munge_socket,
            )
        )
        # Inside a job, snakemake's slurm-jobstep plugin strips every SLURM_* variable before its
        # nested `srun`, SLURM_CONF too; a real cluster has /etc/slurm/slurm.conf, this one finds
        # its config through an `srun` first on PATH that sets SLURM_CONF and runs the real srun.
        srun = self.root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.root}/slurm.conf exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)
        gpu_files = f"{self.root}/dev/fakegpu[0-{self.gpus - 1}]" if self.gpus > 1 else f"{self.root}/dev/fakegpu0"
        (self.root / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={gpu_files}\n")

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict:
        """Environment for client commands (sbatch, squeue, snakemake) that talk to this cluster."""
        path = f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf"), "PATH": path}

    # 2. daemons
    def _spawn(self, name: str, args: list[str], **kwargs) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")
        self.processes[name] = subprocess.Popen(
            [_daemon(name), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, **kwargs,
        )
        log.close()

    def _wait_for(self, what: str, ready) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode} while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {self.start_timeout_s} s waiting for {what}\n{self.logs()}")

    def _node_state(self) -> str:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T", "-n", "localhost"], env=self.env, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip()

    def start(self) -> "SlurmCluster":
        self._write_files()
        munge = self.root / "munge"
        self._spawn(
            "munged",
            ["--foreground", f"--socket={self.munge_socket}", f"--key-file={munge / 'munge.key'}",
             f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
             f"--seed-file={munge / 'munged.seed'}"],
            user="munge", group="munge", extra_groups=[],
        )
        self._wait_for("the munge socket", self.munge_socket.exists)
        self._spawn("slurmctld", ["-D", "-i"])
        self._spawn("slurmd", ["-D", "-N", "localhost"])
        self._wait_for("the node to be idle (sinfo)", lambda: self._node_state() == "idle")
        return self

    def stop(self) -> None:
        """Cancel this cluster's jobs, then end each daemon by its pid (TERM, then KILL)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True, timeout=10)
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def cleanup(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def __enter__(self) -> "SlurmCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()
