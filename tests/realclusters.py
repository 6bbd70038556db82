"""Real clusters on this machine, for tests and benchmarks: a one-node SLURM (munged, a private
MariaDB, slurmdbd, slurmctld, slurmd) and a Ray of several nodes. Each is started from folders of
its own, on free ports, by the process that uses it, and stopped by process id: never `ray stop`
or a service manager, which would stop every other cluster on the machine too.

    with SlurmCluster(folder) as slurm:      # sbatch/sacct/submitit with slurm.env (SLURM_CONF)
        ...
    with RayCluster(folder, nodes=2) as ray_cluster:   # ray.init(ray_cluster.address) with ray_cluster.env
        ...

`python tests/realclusters.py slurm|ray` starts one, prints how to use it, and stops it on Ctrl-C.
Linux only; the daemons run as the user who starts them (root in CI).
"""
from __future__ import annotations

import atexit
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

# Set in the environment of every daemon a cluster starts, with a value of that cluster (and node):
# children that leave the daemon's process tree (slurmstepd daemonizes, Ray re-parents workers)
# still carry it, so stop() finds them by /proc/PID/environ.
MARKER = "LR0FM_REALCLUSTER"

SLURM_BINARIES = ("munged", "mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "slurmctld", "slurmd",
                  "sinfo", "squeue", "sbatch", "scancel", "sacct", "sacctmgr", "scontrol")
SLURM_PACKAGES = "slurm-wlm munge slurmdbd mariadb-server"


class MissingBinaries(RuntimeError):
    """Programs a cluster needs are not installed."""


def _which(name: str) -> str | None:
    """``name``'s path, looking in the sbin folders too (not on a normal user's PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]))


def missing_slurm_binaries() -> list[str]:
    return [b for b in SLURM_BINARIES if _which(b) is None]


def ray_executable() -> str | None:
    """The `ray` command of this Python (its venv), else the one on PATH."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else shutil.which("ray")


def _short_dir(prefix: str) -> Path:
    """A new folder under /tmp with a short path (a unix socket's path is limited to 107 bytes),
    searchable by everyone (munged refuses a socket below a folder that is not)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
    d.chmod(0o755)
    return d


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"  ({e})"
    return "\n".join("  " + line for line in text[-lines:])


class _Ports:
    """Free TCP ports, held bound until release() so that one picker never hands out a port twice.
    Taken below Linux's ephemeral range (32768+), where the OS picks ports for outgoing connections
    and for port 0, so that those do not take them between release() and the daemon's bind."""

    LOW, HIGH = 20000, 32700

    def __init__(self):
        self._held: list[socket.socket] = []

    def take(self) -> int:
        for _ in range(1000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("0.0.0.0", random.randrange(self.LOW, self.HIGH)))
            except OSError:
                s.close()
                continue
            self._held.append(s)
            return s.getsockname()[1]
        raise RuntimeError(f"no free TCP port in {self.LOW}-{self.HIGH}")

    def release(self):
        for s in self._held:
            s.close()
        self._held = []


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _marked(value: str, prefix: bool = False) -> set[int]:
    """Processes whose environment has MARKER=value (or a value starting with ``value``)."""
    found = set()
    for p in psutil.process_iter():
        try:
            v = p.environ().get(MARKER)
        except (psutil.Error, OSError):
            continue
        if v is not None and (v.startswith(value) if prefix else v == value):
            found.add(p.pid)
    return found


def _with_sockets_in(folder: Path) -> set[int]:
    """Processes holding a unix socket below ``folder``."""
    try:
        conns = psutil.net_connections(kind="unix")
    except psutil.AccessDenied:
        return set()
    return {c.pid for c in conns if c.pid and c.laddr and c.laddr.startswith(f"{folder}/")}


def _ended(p: psutil.Process) -> bool:
    """Gone, or a zombie (its parent reaps it: maybe us, via Popen.wait; maybe PID 1)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _family(roots, marker: str, prefix: bool = False, socket_dir: Path | None = None) -> dict[int, psutil.Process]:
    """Every live process of a cluster and their descendants: the roots, the members of the process
    groups they lead (each was started in a session of its own), processes carrying the marker,
    and those holding a unix socket in the cluster's ``socket_dir`` (slurmstepd: it leaves
    slurmd's tree and its environment). Not by TCP port: a Ray driver listens on a port of its
    node's worker range, and another cluster may use a port once this one let it go."""
    found: dict[int, psutil.Process] = {}

    def add(pid):
        try:
            p = psutil.Process(pid)
            for q in [p] + p.children(recursive=True):
                if not _ended(q):
                    found[q.pid] = q
        except psutil.Error:
            pass

    roots = [r for r in roots if r]
    for pid in roots:
        add(pid)
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpgrp() and os.getpgid(p.pid) in roots:
                add(p.pid)
        except (psutil.Error, OSError):
            pass
    for pid in _marked(marker, prefix) | (_with_sockets_in(socket_dir) if socket_dir else set()):
        add(pid)
    found.pop(os.getpid(), None)
    return found


def _kill(procs: dict[int, psutil.Process], grace: float, children=()) -> None:
    """SIGTERM (if ``grace``), then SIGKILL after ``grace`` seconds; wait until all have ended, reap
    ``children`` (our Popen objects), and wait (10 s at most) until PID 1 has reaped the others:
    an orphan shows as a zombie in `ps` until then."""
    everyone = list(procs.values())
    alive = [p for p in everyone if not _ended(p)]
    for sig, wait in ([(signal.SIGTERM, grace)] if grace else []) + [(signal.SIGKILL, 15)]:
        for p in alive:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        end = time.monotonic() + wait
        while alive and time.monotonic() < end:
            time.sleep(0.05)
            alive = [p for p in alive if not _ended(p)]
    if alive:
        raise RuntimeError(f"processes still alive after SIGKILL: {[p.pid for p in alive]}")
    for child in children:
        child.wait()
    end = time.monotonic() + 10
    while time.monotonic() < end and any(p.is_running() for p in everyone):
        time.sleep(0.1)


def _spawn(cmd: list[str], log: Path, env: dict, **kw) -> subprocess.Popen:
    """``cmd`` in a session of its own (its process group is ours to kill), output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, **kw)


class _Cluster:
    """What both clusters share: start in __enter__ (stopping what was started if that fails), a
    stop() that runs once, also at interpreter exit if nobody called it."""

    def __init__(self):
        self._started = self._stopped = False

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _mark_started(self):
        if self._started:
            raise RuntimeError(f"{type(self).__name__} was started already")
        self._started = True
        atexit.register(self.stop)

    def stop(self):
        if self._stopped or not self._started:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        self._stop()

    def _stop(self):
        raise NotImplementedError


class SlurmCluster(_Cluster):
    """A one-node SLURM with accounting (sacct works, which submitit needs), started in ``base_dir``.

    Configuration, state, logs and the database go to ``base_dir``; sockets and slurmd's spool to
    a short folder under /tmp (``run_dir``, removed by stop() unless ``keep_run_dir``). Attributes
    once started: ``env`` (what clients need: SLURM_CONF), ``partition``, ``node``, ``cluster_name``,
    ``pids`` (daemon name -> PID), ``logs`` (daemon name -> log file), ``conf``.

    ``cred_expire`` (seconds, at least 5) is also how long a requeued job waits before it may start
    again (SLURM's default: 120 s)."""

    def __init__(self, base_dir, cpus: int = 2, cred_expire: int = 5, timeout: float = 90.0,
                 keep_run_dir: bool = False):
        super().__init__()
        if cred_expire < 5:  # slurmctld would log "invalid" and use 120 s
            raise ValueError(f"cred_expire must be at least 5 (seconds), not {cred_expire}")
        self.base_dir = Path(base_dir).absolute()
        self.cpus, self.cred_expire, self.timeout, self.keep_run_dir = cpus, cred_expire, timeout, keep_run_dir
        self.node = socket.gethostname().split(".")[0]
        self.partition = "lr0fm"
        self.cluster_name = "lr0fm"
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.pids: dict[str, int] = {}
        self.logs: dict[str, Path] = {}
        self.env: dict[str, str] = {}
        self.run_dir: Path | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._marker = f"slurm:{secrets.token_hex(8)}"

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        self._mark_started()
        missing = missing_slurm_binaries()
        if missing:
            raise MissingBinaries(f"SLURM test cluster needs {', '.join(missing)}: install the Debian packages "
                                  f"{SLURM_PACKAGES} (make deb-test)")
        t0 = time.monotonic()
        self._deadline = t0 + self.timeout
        b = self.base_dir
        for sub in ("etc", "log", "state", "munge"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir = _short_dir("lr0fm-slurm-")
        (self.run_dir / "spool").mkdir()
        self.logs = {n: b / "log" / f"{n}.log" for n in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")}
        ports = _Ports()
        self.ports = dict(zip(("slurmctld", "slurmd", "slurmdbd", "mariadb"), (ports.take() for _ in range(4))))
        self.munge_socket = self.run_dir / "munge.sock"
        self.db_socket = self.run_dir / "mysql.sock"
        self.conf = b / "etc" / "slurm.conf"
        db_password = secrets.token_hex(12)
        self._write_confs(db_password)
        self.env = {"SLURM_CONF": str(self.conf)}
        self._daemon_env = {**os.environ, **self.env, MARKER: self._marker}
        ports.release()

        self._start_munged()
        self._start_mariadb(db_password)
        self._daemon("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait(lambda: _listening(self.ports["slurmdbd"]), "slurmdbd to listen")
        self._daemon("slurmctld", [_which("slurmctld"), "-D", "-i"])
        self._wait(lambda: _listening(self.ports["slurmctld"]), "slurmctld to listen")
        self._daemon("slurmd", [_which("slurmd"), "-D", "-N", self.node])
        self._wait(lambda: self._node_state() == "idle", f"node {self.node} to be idle in sinfo")
        self._ensure_association()
        self.startup_s = time.monotonic() - t0
        return self

    def _write_confs(self, db_password: str):
        b, run = self.base_dir, self.run_dir
        mem_mb = int(psutil.virtual_memory().total / 2**20 * 0.9)
        plugstack = b / "etc" / "plugstack.conf"  # empty: independent of /etc/slurm
        plugstack.write_text("")
        self.conf.write_text(f"""\
ClusterName={self.cluster_name}
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.ports['slurmctld']}
SlurmdPort={self.ports['slurmd']}
SlurmUser={self.user}
SlurmdUser={self.user}
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also the wait before a requeued job may start again (default 120 s)
AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire}
StateSaveLocation={b}/state
SlurmdSpoolDir={run}/spool
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={self.logs['slurmctld']}
SlurmdLogFile={self.logs['slurmd']}
PlugStackConfig={plugstack}
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports['slurmdbd']}
# the munge socket for slurmctld -> slurmdbd: AuthInfo's socket is not used for that connection
AccountingStoragePass={self.munge_socket}
# a scheduling pass every second (default 60 s); completed jobs leave squeue after 2 s (default 300 s)
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MinJobAge=2
KillWait=2
ReturnToService=2
# trust CPUs/RealMemory below whatever the hardware is
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        dbd = b / "etc" / "slurmdbd.conf"  # slurmdbd reads it from SLURM_CONF's folder
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports['slurmdbd']}
SlurmUser={self.user}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports['mariadb']}
StorageUser=slurm
StoragePass={db_password}
StorageLoc=slurm_acct_db
PidFile={run}/slurmdbd.pid
LogFile={self.logs['slurmdbd']}
""")
        dbd.chmod(0o600)  # slurmdbd refuses a conf others can read

    def _daemon(self, name: str, cmd: list[str]):
        self._procs[name] = _spawn(cmd, self.base_dir / "log" / f"{name}.out", self._daemon_env)
        self.pids[name] = self._procs[name].pid

    def _wait(self, ready, what: str):
        while True:
            if ready():
                return
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead or time.monotonic() > self._deadline:
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {self.timeout:.0f} s"
                raise RuntimeError(f"SLURM test cluster: waiting for {what}: {why}\n{self._log_tails()}")
            time.sleep(0.2)

    def _log_tails(self) -> str:
        parts = []
        for name in self._procs:
            for log in (self.base_dir / "log" / f"{name}.out", self.logs.get(name)):
                if log and log.exists() and log.stat().st_size:
                    parts.append(f"--- {log}:\n{_tail(log)}")
        return "\n".join(parts)

    def _start_munged(self):
        key = self.base_dir / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self._daemon("munged", [_which("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                                f"--pid-file={self.run_dir}/munged.pid", f"--seed-file={self.base_dir}/munge/seed",
                                f"--log-file={self.logs['munged']}", "--num-threads=8"])
        self._wait(self.munge_socket.exists, "munged's socket")

    def _sql(self, statement: str) -> subprocess.CompletedProcess:
        return subprocess.run([_which("mariadb"), "--no-defaults", f"--socket={self.db_socket}", "-uroot",
                               "-e", statement], capture_output=True, text=True, timeout=30)

    def _start_mariadb(self, password: str):
        datadir = self.base_dir / "mariadb"
        with open(self.base_dir / "log" / "mariadb-install-db.out", "wb") as out:
            r = subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}",
                                f"--user={self.user}", "--auth-root-authentication-method=normal",
                                "--skip-test-db"], stdout=out, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode:
            raise RuntimeError(f"mariadb-install-db failed:\n{_tail(out.name)}")
        self._daemon("mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--user={self.user}",
                                  "--bind-address=127.0.0.1", f"--port={self.ports['mariadb']}",
                                  f"--socket={self.db_socket}", f"--pid-file={self.run_dir}/mariadbd.pid",
                                  f"--log-error={self.logs['mariadbd']}", "--skip-name-resolve",
                                  "--innodb-lock-wait-timeout=900"])
        self._wait(lambda: self._sql("SELECT 1").returncode == 0, "MariaDB to accept connections")
        r = self._sql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}';"
                      "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
        if r.returncode:
            raise RuntimeError(f"creating slurmdbd's database user failed: {r.stderr.strip()}")

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster (its env), output captured as text."""
        return subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def _node_state(self) -> str:
        try:
            r = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", timeout=5, check=False)
        except subprocess.TimeoutExpired:
            return ""
        return r.stdout.strip()

    def _ensure_association(self):
        """sacct lists a user's jobs when the user has an association; slurmctld registers the
        cluster and its SlurmUser (here: the user who started it) by itself."""
        def listed():
            return self.run("sacctmgr", "-n", "-P", "list", "associations", "format=cluster,user",
                            check=False).stdout.split()
        self._wait(lambda: f"{self.cluster_name}|{self.user}" in listed(), "slurmdbd to list the cluster")

    # -- stop ----------------------------------------------------------------------------------
    def _stop(self):
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                jobs = self.run("squeue", "-h", "-o", "%A", timeout=10, check=False).stdout.split()
                if jobs:
                    self.run("scancel", *jobs, timeout=10, check=False)
                    end = time.monotonic() + 6
                    while time.monotonic() < end and self.run("squeue", "-h", "-o", "%A", timeout=10,
                                                               check=False).stdout.strip():
                        time.sleep(0.3)
            except (subprocess.TimeoutExpired, OSError):
                pass
        _kill(_family(self.pids.values(), self._marker, socket_dir=self.run_dir), grace=3,
              children=self._procs.values())
        if self.run_dir is not None and not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass
class RayNode:
    """One node of a RayCluster: ``process`` is its `ray start --block`, ``ports`` its own ports,
    ``raylet_pid`` and ``node_id`` (hex, as Ray reports it) known once the node is up."""
    index: int
    temp_dir: Path
    ports: dict[str, int]
    marker: str
    process: subprocess.Popen | None = None
    raylet_pid: int | None = None
    node_id: str | None = None
    dead: bool = False

    def processes(self) -> dict[int, psutil.Process]:
        """The node's live processes now: `ray start`, raylet, agents, workers (also renamed ray::...)."""
        return _family([self.process.pid] if self.process else [], self.marker)

    def pids(self) -> set[int]:
        return set(self.processes())


# Queries the GCS from a separate process (the caller's process must not become a Ray driver, and
# the token is in the environment given to that process): the nodes as JSON.
_NODES_PROBE = r"""
import json, sys
from ray._raylet import GcsClient
infos = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10)
print(json.dumps([{"node_id": i.node_id.hex(), "alive": i.state == 0, "port": i.node_manager_port}
                  for i in infos.values()]))
"""


class RayCluster(_Cluster):
    """``nodes`` Ray nodes on this machine (the first is the head), each with ``cpus_per_node`` CPUs,
    ``gpus_per_node`` logical GPUs, its own temporary folder and ports.

    Token authentication: `ray start` turns it on by default and then reads or writes
    ~/.ray/auth_token, shared by every Ray of the user. Each cluster here has a token of its own
    instead, given to head, workers and clients in the environment (RAY_AUTH_MODE=token,
    RAY_AUTH_TOKEN): multi-node token auth is exercised as users meet it, and nothing outside the
    cluster's folders is read or written. ``env`` holds what a client needs (the token; never
    RAY_ADDRESS: the caller decides how to connect, to ``address``).

    Node folders are under a short folder in /tmp (``run_dir``, linked from ``base_dir/ray``; unix
    sockets limit path lengths), removed by stop() unless ``keep_run_dir``."""

    def __init__(self, base_dir, nodes: int = 2, cpus_per_node: int = 1, gpus_per_node: int = 0,
                 object_store_mb: int = 200, timeout: float = 120.0, keep_run_dir: bool = False):
        super().__init__()
        if nodes < 1:
            raise ValueError("a Ray cluster needs at least one node")
        self.base_dir = Path(base_dir).absolute()
        self.n_nodes, self.cpus_per_node, self.gpus_per_node = nodes, cpus_per_node, gpus_per_node
        self.object_store_mb, self.timeout, self.keep_run_dir = object_store_mb, timeout, keep_run_dir
        self.nodes: list[RayNode] = []
        self.address = ""
        self.env: dict[str, str] = {}
        self.run_dir: Path | None = None
        self._marker = f"ray:{secrets.token_hex(8)}"

    @property
    def pids(self) -> set[int]:
        return set().union(*(n.pids() for n in self.nodes)) if self.nodes else set()

    def start(self) -> "RayCluster":
        self._mark_started()
        ray = ray_executable()
        if ray is None:
            raise MissingBinaries("Ray test cluster needs the `ray` command: pip install ray")
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = _short_dir("lr0fm-ray-")
        link = self.base_dir / "ray"
        if not link.exists():
            link.symlink_to(self.run_dir)
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        ports = _Ports()
        gcs_port = ports.take()
        self.address = f"127.0.0.1:{gcs_port}"
        for i in range(self.n_nodes):
            names = ("node_manager", "object_manager", "agent_listen", "agent_grpc", "runtime_env_agent", "metrics")
            p = dict(zip(names, (ports.take() for _ in names)))
            if i == 0:
                p["gcs"] = gcs_port
            self.nodes.append(RayNode(i, self.run_dir / f"n{i}", p, f"{self._marker}:n{i}:"))
        ports.release()
        for node in self.nodes:
            self._start_node(ray, node)
            if node.index == 0:
                self._wait(lambda: _listening(gcs_port), "the head's GCS to listen", t0)
        self._wait_nodes(lambda alive: len(alive) == self.n_nodes, f"{self.n_nodes} nodes alive", t0)
        self.startup_s = time.monotonic() - t0
        return self

    def _start_node(self, ray: str, node: RayNode):
        p = node.ports
        cmd = [ray, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
               "--temp-dir", str(node.temp_dir),
               "--num-cpus", str(self.cpus_per_node), "--num-gpus", str(self.gpus_per_node),
               "--object-store-memory", str(self.object_store_mb * 2**20),
               "--node-manager-port", str(p["node_manager"]), "--object-manager-port", str(p["object_manager"]),
               # workers (and drivers) bind ports the OS picks, as in Ray's own multi-node tests
               # (ray.cluster_utils): a reserved range is only bound once workers start, so another
               # cluster started meanwhile could pick a port in it
               "--min-worker-port", "0", "--max-worker-port", "0",
               "--dashboard-agent-listen-port", str(p["agent_listen"]),
               "--dashboard-agent-grpc-port", str(p["agent_grpc"]),
               "--runtime-env-agent-port", str(p["runtime_env_agent"]), "--metrics-export-port", str(p["metrics"])]
        cmd += (["--head", "--port", str(p["gcs"]), "--include-dashboard", "false"] if node.index == 0
                else ["--address", self.address])
        node.temp_dir.mkdir(parents=True)
        # a node brought back (restart_node) gets the environment the cluster was started with
        self._start_env = getattr(self, "_start_env", None) or dict(os.environ)
        env = {**self._start_env, **self.env, MARKER: node.marker, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        node.process = _spawn(cmd, self.base_dir / f"ray-start-n{node.index}.out", env)

    def _fail(self, what: str, t0: float, why: str = ""):
        tails = "\n".join(f"--- {self.base_dir}/ray-start-n{n.index}.out:\n"
                          f"{_tail(self.base_dir / f'ray-start-n{n.index}.out')}" for n in self.nodes)
        why = why or f"timed out after {time.monotonic() - t0:.0f} s"
        raise RuntimeError(f"Ray test cluster: waiting for {what}: {why}\n{tails}")

    def _check(self, what: str, t0: float):
        """Raise if a node's `ray start` exited (other than by kill_node) or the wait took too long."""
        dead = [f"node {n.index}" for n in self.nodes if n.process and n.process.poll() is not None and not n.dead]
        if dead:
            self._fail(what, t0, f"`ray start` of {', '.join(dead)} exited")
        if time.monotonic() - t0 > self.timeout:
            self._fail(what, t0)

    def _wait(self, ready, what: str, t0: float):
        while not ready():
            self._check(what, t0)
            time.sleep(0.2)

    def node_table(self, client_env: dict | None = None) -> list[dict]:
        """The GCS's nodes: node_id, alive, port (node manager); asked by a client process with
        ``client_env`` as its whole environment (default: ours plus ``env``)."""
        r = subprocess.run([sys.executable, "-c", _NODES_PROBE, self.address], capture_output=True, text=True,
                           timeout=60, env=client_env if client_env is not None else {**os.environ, **self.env})
        if r.returncode:
            raise RuntimeError(f"reading Ray's node table failed: {r.stderr.strip()[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def _wait_nodes(self, done, what: str, t0: float):
        """Wait until ``done(alive)`` holds, alive: {node index: node id} of the nodes alive in the GCS."""
        by_port = {n.ports["node_manager"]: n for n in self.nodes}
        while True:
            alive = {}
            for row in self.node_table():
                node = by_port.get(row["port"])
                if node is not None and row["alive"]:
                    node.node_id = row["node_id"]
                    alive[node.index] = row["node_id"]
            if done(alive):
                break
            self._check(what, t0)
            time.sleep(0.5)
        for node in self.nodes:
            if not node.dead and node.raylet_pid is None:
                node.raylet_pid = next((pid for pid, p in node.processes().items()
                                        if _name(p) == "raylet"), None)

    def kill_node(self, i: int) -> None:
        """SIGKILL every process of node ``i`` (not the head's: that is the cluster)."""
        if i == 0:
            raise ValueError("kill_node(0) would kill the head: use stop()")
        node = self.nodes[i]
        node.dead = True
        _kill(node.processes(), grace=0, children=[node.process])

    def restart_node(self, i: int, timeout: float = 120.0) -> None:
        """Start node ``i`` again after kill_node (same ports, a fresh temporary folder), as an admin
        brings a machine back; wait until the GCS has it alive."""
        node = self.nodes[i]
        if not node.dead:
            raise ValueError(f"node {i} is running: kill_node({i}) first")
        shutil.rmtree(node.temp_dir, ignore_errors=True)
        node.dead, node.raylet_pid, node.node_id = False, None, None
        self._start_node(ray_executable(), node)
        t0 = time.monotonic()
        saved, self.timeout = self.timeout, timeout
        try:
            self._wait_nodes(lambda alive: i in alive, f"node {i} alive again", t0)
        finally:
            self.timeout = saved

    def wait_node_dead(self, i: int, timeout: float = 60.0) -> float:
        """Wait until the GCS marks node ``i`` dead; the seconds it took."""
        t0 = time.monotonic()
        saved, self.timeout = self.timeout, timeout
        try:
            self._wait_nodes(lambda alive: i not in alive, f"node {i} marked dead", t0)
        finally:
            self.timeout = saved
        return time.monotonic() - t0

    def _stop(self):
        procs = {}
        for node in self.nodes:
            procs.update(node.processes())
        procs.update(_family([], self._marker, prefix=True))
        _kill(procs, grace=0, children=[n.process for n in self.nodes if n.process is not None])
        if self.run_dir is not None and not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _interrupt(*_):
    raise KeyboardInterrupt


def _main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("slurm", "ray"):
        print("usage: python tests/realclusters.py slurm|ray  (starts one, Ctrl-C stops it)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix=f"lr0fm-{argv[0]}-cluster-"))
    cluster = SlurmCluster(base) if argv[0] == "slurm" else RayCluster(base)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it as Ctrl-C does
    with cluster:
        print(f"started in {cluster.startup_s:.1f} s, folder {base}\n"
              f"  export {' '.join(f'{k}={v}' for k, v in cluster.env.items())}")
        if argv[0] == "slurm":
            print(f"  sbatch --wrap hostname; squeue; sacct   (partition {cluster.partition}, node {cluster.node})\n"
                  f"  daemons: {cluster.pids}")
        else:
            print(f"  RAY_ADDRESS={cluster.address} python -c 'import ray; ray.init(); print(ray.nodes())'\n"
                  f"  nodes: {[n.node_id for n in cluster.nodes]}")
        print("Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            t = time.monotonic()
    print(f"stopped in {time.monotonic() - t:.1f} s; configuration and logs stay in {base}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
