"""Training beyond one machine: SLURM task variables, FSDP2 against DDP and one process (killed and resumed,
and across the two), and two loopback "nodes" under torchrun (c10d and static rendezvous) against one node
with two processes: the same losses and exported weights."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_corpus import unlabeled_corpus
from safetensors.torch import load_file

from speechrep.ranks import adopt_slurm_environment, first_slurm_host, slurm_ranks
from speechrep.train import read_checkpoint, read_metrics

TOY = Path(__file__).parent / "distributed_toy.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# a 2-layer width-32 wav2vec 2.0 (random masks and negatives: each rank's RNG matters) on 3-second windows
PRETRAIN = ["pretrain", "--method", "wav2vec2", "--preset", "tiny", "model.hidden_size=32",
            "model.num_heads=2", "model.ffn_size=64", "num_negatives=10", "gumbel_decay=0.9",
            "data.max_utterance=3.0",
            "data.max_duration=3.0", "train.log_every=1", "train.max_steps=4", "train.eval_every=2"]


# --- SLURM ----------------------------------------------------------------------------------------------

SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NODELIST": "gpu[03-04,09],cpu1"}


def test_slurm_task_variables_become_torchrun_variables():
    env = dict(SRUN)
    assert slurm_ranks(env) == (5, 8, 1)
    assert adopt_slurm_environment(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("5", "8", "1")
    assert env["MASTER_ADDR"] == "gpu03" and env["MASTER_PORT"] == str(15000 + 123456 % 20000)
    # srun's own step size wins over the job's task count; an explicit MASTER_ADDR/PORT is kept
    env = {**SRUN, "SLURM_STEP_NUM_TASKS": "6", "MASTER_ADDR": "head", "MASTER_PORT": "29500"}
    assert adopt_slurm_environment(env)
    assert env["WORLD_SIZE"] == "6" and env["MASTER_ADDR"] == "head" and env["MASTER_PORT"] == "29500"


def test_torchrun_variables_win_and_no_slurm_means_nothing():
    env = {**SRUN, "RANK": "0", "WORLD_SIZE": "2"}
    assert slurm_ranks(env) is None and not adopt_slurm_environment(env) and env["RANK"] == "0"
    env = {"PATH": "/bin"}
    assert not adopt_slurm_environment(env) and env == {"PATH": "/bin"}
    single = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}  # one task: no rendezvous address needed
    assert adopt_slurm_environment(single) and "MASTER_ADDR" not in single


@pytest.mark.parametrize("env, message", [
    ({"SLURM_PROCID": "8", "SLURM_NTASKS": "8"}, "not a task of 8"),
    ({"SLURM_PROCID": "x", "SLURM_NTASKS": "8"}, "not integers"),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, "no rank-0 host"),
])
def test_bad_slurm_variables_are_one_line_errors(env, message):
    with pytest.raises(ValueError, match=message):
        adopt_slurm_environment(dict(env))


@pytest.mark.parametrize("nodelist, host", [("node7", "node7"), ("a1,b2", "a1"), ("g[03-05,09],c1", "g03"),
                                            ("n[010-012]", "n010"), ("rack[2,4]-n[7-9]", "rack2-n7")])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_a_process_under_srun_reads_its_ranks_from_slurm():
    env = {k: v for k, v in _clean_env().items() if not k.startswith("SLURM_")}
    env.update(SRUN)
    code = ("import os; from speechrep.ranks import rank_and_world, local_rank; "
            "print(rank_and_world(), local_rank(), os.environ['MASTER_ADDR'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "(5, 8) 1 gpu03"


# --- FSDP2 against DDP and one process (toy model) ------------------------------------------------------

def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _toy(tmp_path: Path, name: str, *args: str) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{name}.pt"
    command = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", str(TOY), str(tmp_path / name), str(out),
               *args]
    proc = subprocess.run(command, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if len(args) > 1:  # killed and started again
        assert "resuming" in proc.stderr and "from step 3" in proc.stderr
    return torch.load(out, weights_only=True)


def _load_toy():
    spec = importlib.util.spec_from_file_location("distributed_toy", TOY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fsdp_killed_and_resumed_matches_one_process(tmp_path: Path):
    fsdp = _toy(tmp_path, "fsdp", "fsdp", "4")  # killed after step 4, resumed from the step-3 checkpoint
    single = _load_toy().run(tmp_path / "single").state_dict()
    assert int(fsdp["updates"]) == 6 and set(fsdp) == set(single)
    for name, value in single.items():
        torch.testing.assert_close(fsdp[name], value, rtol=1e-5, atol=1e-6)
    losses = [r["loss"] for r in read_metrics(tmp_path / "single", "train")]
    resumed = [r["loss"] for r in read_metrics(tmp_path / "fsdp", "train")]
    assert resumed[-3:] == pytest.approx(losses[-3:], rel=1e-5)
    ckpt = read_checkpoint(tmp_path / "fsdp" / "checkpoints" / "last.pt")
    # the checkpoint is full (not shards), in the layout of a plain AdamW state dict
    assert ckpt["config"]["parallel"] == "fsdp" and ckpt["model"]["inp.weight"].shape == (15, 6)
    assert ckpt["optimizer"]["state"][0]["exp_avg"].shape == ckpt["model"]["inp.weight"].shape


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_fsdp_to_the_ddp_weights(tmp_path: Path):
    ddp = _toy(tmp_path, "ddp", "ddp")
    crossed = _toy(tmp_path, "crossed", "ddp", "4", "fsdp")
    for name, value in ddp.items():
        torch.testing.assert_close(crossed[name], value, rtol=1e-5, atol=1e-6)


# --- pre-training: two loopback nodes, FSDP2 ------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def one_node(corpus: Path, tmp_path_factory) -> Path:
    """The reference: one node, two processes, DDP."""
    run = tmp_path_factory.mktemp("one_node") / "run"
    _pretrain([*TORCHRUN, "--standalone", "--nproc_per_node", "2"], corpus, run)
    return run


def _pretrain(launcher: list[str], corpus: Path, run: Path, *extra: str, nodes: int = 1) -> None:
    """Run the pretrain command under `launcher`; with nodes=2, one launcher per node ({node}: its rank)."""
    command = [*launcher, "-m", "speechrep.cli", *PRETRAIN, *extra, "--data", str(corpus), "--out", str(run)]
    if nodes == 1:
        commands = [command]
    else:  # one torchrun agent per "node", started together
        commands = [[c.replace("{node}", str(node)) for c in command] for node in range(nodes)]
    procs = [subprocess.Popen(c, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c in commands]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in read_metrics(run, "train")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["c10d", "static"])
def test_two_loopback_nodes_equal_one_node_with_two_processes(rendezvous: str, corpus: Path,
                                                               one_node: Path, tmp_path: Path):
    port = _free_port()
    nodes = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", "{node}"]
    if rendezvous == "c10d":
        nodes += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "loopback"]
    else:
        nodes += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    run = tmp_path / "two_nodes"
    _pretrain(nodes, corpus, run, nodes=2)
    assert _losses(run) == _losses(one_node) and len(_losses(run)) == 4
    assert read_checkpoint(run / "checkpoints" / "last.pt")["world_size"] == 2
    a, b = (load_file(r / "upstream" / "model.safetensors") for r in (run, one_node))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "upstream" / "config.json").read_text())["provenance"]["steps"] == 4


@pytest.mark.slow
def test_fsdp_pretraining_equals_ddp(corpus: Path, one_node: Path, tmp_path: Path):
    run = tmp_path / "fsdp"
    _pretrain([*TORCHRUN, "--standalone", "--nproc_per_node", "2"], corpus, run, "train.parallel=fsdp")
    for (step, loss), (ref_step, ref_loss) in zip(_losses(run), _losses(one_node), strict=True):
        assert step == ref_step and loss == pytest.approx(ref_loss, rel=1e-5)
    a, b = (load_file(r / "upstream" / "model.safetensors") for r in (run, one_node))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    heads = [read_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (run, one_node)]
    assert int(heads[0]["updates"]) == 4 and heads[0].keys() == heads[1].keys()
