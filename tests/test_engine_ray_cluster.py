"""The Ray engine on a two-node Ray started the way a user starts one (``ray start --head`` +
``ray start --address``, tests/realclusters.py), with faults injected from outside by PID: the node
that is not the driver's lost in two runs in a row, two drivers on one results folder; the cluster
is left running (--address)."""
import pytest

from conftest import assert_same_store
from enginekit import fault_env, partials, start_lr0fm, task_runs, wait_for, with_progress

pytest.importorskip("ray")


def cluster_driver(ray_cluster, cfg, out, tmp_path, **test_faults):
    """``lr0fm sweep`` joined to the two-node cluster, as a user runs it, its progress on stderr."""
    env = {**fault_env(tmp_path, **test_faults), **ray_cluster.env}
    env.pop("RAY_ADDRESS", None)
    return start_lr0fm(["sweep", with_progress(cfg, tmp_path), "--engine", "ray", "--address", ray_cluster.address,
                        "--out", out], env=env)



@pytest.mark.slow
def test_every_worker_node_lost_again_and_again(ray_cluster, grid, tmp_path):
    """The node that is not the driver's is SIGKILLed mid-run (every process of it, by PID), brought
    back and lost again in the next run: each run ends with the single-process store, the lost
    units retried from their resume points, the cluster still up."""
    cfg, ref = grid
    driver_node = ray_cluster.nodes[0].node_id  # Ray connects a driver on the head's host to the head
    for round in range(2):
        out, log = tmp_path / f"o{round}", tmp_path / f"tasks{round}"
        driver = cluster_driver(ray_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
        try:
            # both slots' tasks mid-pass, each with a resume point on the driver's node
            wait_for(lambda: len(partials(out)) >= 2, 240, what="two tasks mid-pass")
            ray_cluster.kill_node(1)
            ray_cluster.wait_node_dead(1)
            _, err = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, err[-3000:]
        assert f"driver and coordinator on node {driver_node[:12]}" in err
        records = assert_same_store(ref, out, 12)
        assert max(r["run"]["attempts"] for r in records) == 2  # the units on the lost node, once more
        assert any(r["run"]["resumed_images"] > 0 for r in records)  # from the resume points on the driver's node
        assert max(task_runs(log).values()) == 2
        ray_cluster.restart_node(1)


@pytest.mark.slow
def test_two_drivers_on_one_results_folder_compute_each_unit_once(ray_cluster, grid, tmp_path):
    cfg, ref = grid
    out, log = tmp_path / "o", tmp_path / "tasks"
    first = cluster_driver(ray_cluster, cfg, out, tmp_path, SAVE_DELAY=0.5, TASK_LOG=log)
    try:
        wait_for(lambda: log.exists(), 240, what="the first driver's first task")
        second = cluster_driver(ray_cluster, cfg, out, tmp_path, SAVE_DELAY=0.5, TASK_LOG=log)
        _, err2 = second.communicate(timeout=600)
        _, err1 = first.communicate(timeout=600)
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    assert first.returncode == 0 and second.returncode == 0, (err1[-2000:], err2[-2000:])
    assert_same_store(ref, out, 12)
    runs = task_runs(log)
    assert len(runs) == 4 and set(runs.values()) == {1}, runs  # 4 units, each computed by one driver once
    alive = {n["node_id"] for n in ray_cluster.node_table() if n["alive"]}
    assert {n.node_id for n in ray_cluster.nodes} <= alive  # --address: the cluster is left running
