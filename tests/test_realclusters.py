"""The real test clusters themselves (tests/realclusters.py): a job runs and is accounted in SLURM,
cancel and requeue act; Ray's nodes are up, a task pinned to a node runs in that node's processes,
a killed node is marked dead; and nothing of a cluster is left running once it is stopped."""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time

import psutil
import pytest

from realclusters import RayCluster, SlurmCluster


def wait_for(what, get, ok, timeout=60.0, every=0.3):
    """Poll ``get()`` until ``ok(value)``; the value (fails naming ``what`` and the last value)."""
    end = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > end:
            pytest.fail(f"waited {timeout:.0f} s for {what}; last: {value!r}")
        time.sleep(every)


def running(pid: int) -> bool:
    """``pid`` is a process that has not ended (a zombie has: its parent may be gone, and PID 1 of
    a container need not reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- SLURM ---------------------------------------------------------------------------------------
def sacct_states(cluster, job) -> list[str]:
    """The states of ``job``'s elements in the accounting database, all of them (-D: a requeued
    job's earlier runs too)."""
    out = cluster.run("sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]  # "CANCELLED by 0" -> CANCELLED


def squeue_state(cluster, job) -> str:
    return cluster.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()


def submit(cluster, tmp_path, script: str) -> str:
    return cluster.run("sbatch", "--parsable", "-p", cluster.partition, "-o", f"{tmp_path}/%j.out",
                       "--wrap", script).stdout.strip().split(";")[0]


def test_slurm_job_runs_and_is_accounted(slurm_cluster, tmp_path):
    job = submit(slurm_cluster, tmp_path, "echo ran on $(hostname -s) as $SLURM_JOB_ID")
    wait_for(f"job {job} COMPLETED in sacct", lambda: sacct_states(slurm_cluster, job), lambda s: s == ["COMPLETED"])
    assert (tmp_path / f"{job}.out").read_text().split() == ["ran", "on", slurm_cluster.node, "as", job]
    # slurmdbd may fill in the allocation's fields a moment after the state (seen on a loaded machine)
    wait_for(f"job {job}'s node and partition in sacct",
             lambda: slurm_cluster.run("sacct", "-X", "-n", "-P", "-j", job, "-o", "NodeList,Partition").stdout.strip(),
             lambda nodes: nodes == f"{slurm_cluster.node}|{slurm_cluster.partition}")


def test_slurm_scancel_stops_the_job(slurm_cluster, tmp_path):
    pid_file = tmp_path / "pid"
    job = submit(slurm_cluster, tmp_path, f"echo $$ > {pid_file}; exec sleep 300")
    wait_for(f"job {job} RUNNING", lambda: squeue_state(slurm_cluster, job), lambda s: s == "RUNNING")
    pid = int(wait_for("the job's pid file", lambda: pid_file.exists() and pid_file.read_text().strip(), bool))
    assert running(pid)
    slurm_cluster.run("scancel", job)
    wait_for(f"job {job} CANCELLED in sacct", lambda: sacct_states(slurm_cluster, job), lambda s: s == ["CANCELLED"])
    wait_for(f"the job's process {pid} to end", lambda: running(pid), lambda alive: not alive, timeout=20)


def test_slurm_requeue_is_listed_and_runs_again_soon(slurm_cluster, tmp_path):
    job = submit(slurm_cluster, tmp_path, "sleep 300")
    wait_for(f"job {job} RUNNING", lambda: squeue_state(slurm_cluster, job), lambda s: s == "RUNNING")
    t0 = time.monotonic()
    slurm_cluster.run("scontrol", "requeue", job)
    states = wait_for(f"job {job} requeued and RUNNING again", lambda: sacct_states(slurm_cluster, job),
                      lambda s: s == ["REQUEUED", "RUNNING"], timeout=60)
    # SLURM holds a requeued job for cred_expire + 1 s (default 120 s); the cluster sets 5 s
    assert time.monotonic() - t0 < slurm_cluster.cred_expire + 15, states
    slurm_cluster.run("scancel", job)
    wait_for(f"job {job} CANCELLED", lambda: sacct_states(slurm_cluster, job), lambda s: s == ["REQUEUED", "CANCELLED"])


def cluster_processes(cluster) -> set[int]:
    """Live processes of the daemons a SlurmCluster recorded."""
    return {pid for pid in cluster.pids.values() if running(pid)}


@pytest.mark.slow
def test_slurm_stop_leaves_no_process(tmp_path):
    pid_file = tmp_path / "pid"
    cluster = SlurmCluster(tmp_path / "cluster")
    with cluster:
        assert sorted(cluster.pids) == ["mariadbd", "munged", "slurmctld", "slurmd", "slurmdbd"]
        assert len(cluster_processes(cluster)) == 5
        job = submit(cluster, tmp_path, f"echo $$ > {pid_file}; exec sleep 300")
        wait_for(f"job {job} RUNNING", lambda: squeue_state(cluster, job), lambda s: s == "RUNNING")
        job_pid = int(wait_for("the job's pid file", lambda: pid_file.exists() and pid_file.read_text().strip(), bool))
    assert not cluster_processes(cluster) and not running(job_pid)
    assert not cluster.run_dir.exists() and (cluster.base_dir / "log" / "slurmctld.log").exists()
    cluster.stop()  # a second stop does nothing


# -- Ray -----------------------------------------------------------------------------------------
# A driver in a process of its own: runs a task pinned to the node given, prints where it ran,
# and keeps the job (and so the task's worker) alive until its stdin closes.
PINNED_TASK = r"""
import json, os, sys
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], log_to_driver=False)
@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id(), os.getpid()
node, pid = ray.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(sys.argv[2], soft=False)).remote())
print(json.dumps({"node": node, "pid": pid}), flush=True)
sys.stdin.read()
"""


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        pytest.fail(f"no answer from the driver in {timeout:.0f} s: {proc.communicate()[1]}")
    return proc.stdout.readline()


def test_ray_nodes_are_alive(ray_cluster):
    table = {row["node_id"]: row for row in ray_cluster.node_table()}
    ids = [n.node_id for n in ray_cluster.nodes]
    assert len(set(ids)) == 2 and all(table[i]["alive"] for i in ids)
    for node in ray_cluster.nodes:
        assert psutil.Process(node.raylet_pid).name() == "raylet" and node.raylet_pid in node.pids()
    assert not ray_cluster.nodes[0].pids() & ray_cluster.nodes[1].pids()


def test_ray_task_pinned_to_node_runs_there(ray_cluster):
    target = ray_cluster.nodes[1]
    env = {**os.environ, **ray_cluster.env}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", PINNED_TASK, ray_cluster.address, target.node_id], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ran = json.loads(first_line(proc, timeout=120))
        assert ran["node"] == target.node_id
        assert ran["pid"] in target.pids() and ran["pid"] not in ray_cluster.nodes[0].pids()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()


def test_ray_client_without_the_clusters_token_is_refused(ray_cluster):
    no_ray = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    with pytest.raises(RuntimeError, match="InvalidAuthToken"):
        ray_cluster.node_table(client_env={**no_ray, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64})
    alive = {n["node_id"] for n in ray_cluster.node_table(client_env={**no_ray, **ray_cluster.env}) if n["alive"]}
    assert {n.node_id for n in ray_cluster.nodes} <= alive  # (nodes lost earlier stay listed, dead)


@pytest.mark.slow
def test_ray_killed_node_is_marked_dead_and_stop_leaves_no_process(tmp_path):
    cluster = RayCluster(tmp_path, nodes=2)
    with cluster:
        head, node = cluster.nodes
        killed = node.pids()
        assert node.raylet_pid in killed and node.process.pid in killed
        with pytest.raises(ValueError):
            cluster.kill_node(0)
        cluster.kill_node(1)
        assert not any(running(p) for p in killed)
        cluster.wait_node_dead(1, timeout=90)
        table = {row["node_id"]: row["alive"] for row in cluster.node_table()}
        assert table == {head.node_id: True, node.node_id: False}
        left = head.pids()
        assert head.raylet_pid in left
    assert not any(running(p) for p in left) and not cluster.pids
