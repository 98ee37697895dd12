"""Sharding on real distributed engines: torchrun (gloo) and JAX multi-process, on localhost.

Each process runs a real `model.fit` on a `Loader` built with the default
`shard="auto"` and records the ids it trained on (tests/scripts/train_and_record.py).
Per epoch the ranks must be disjoint, equal in number, cover the epoch, and be
the single-process global order split by rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import kloader

from keras_utils import IdRecorder, id_model
from utils import IdDataset

SCRIPT = Path(__file__).parent / "scripts" / "train_and_record.py"
NUM_SAMPLES, BATCH_SIZE, SEED, EPOCHS = 22, 4, 11, 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(command: list[str], timeout: float = 240) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def read_ranks(files: list[Path], num_ranks: int) -> dict[int, list[list[int]]]:
    by_rank: dict[int, list[list[int]]] = {r: [] for r in range(num_ranks)}
    for path in files:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record["shard"][1] == num_ranks, record
            by_rank[record["shard"][0]].append(record["ids"])
    return by_rank


def assert_ranks_split_the_global_order(by_rank: dict[int, list[list[int]]]) -> None:
    single = kloader.Loader(IdDataset(NUM_SAMPLES), batch_size=BATCH_SIZE * 2, seed=SEED, shard=None)
    steps = len(single)
    assert len(by_rank[0]) == len(by_rank[1]) == EPOCHS * steps
    for epoch in range(EPOCHS):
        ranks = [by_rank[r][epoch * steps : (epoch + 1) * steps] for r in (0, 1)]
        samples = [sorted(i for batch in rank for i in batch) for rank in ranks]
        assert not set(samples[0]) & set(samples[1]), f"epoch {epoch}: ranks overlap"
        assert len(samples[0]) == len(samples[1]) == NUM_SAMPLES // 2
        assert sorted(samples[0] + samples[1]) == list(range(NUM_SAMPLES))
        for step in range(steps):
            assert ranks[0][step] + ranks[1][step] == single.indices(step, epoch).tolist()


@pytest.mark.slow
@pytest.mark.backend("torch")
def test_torchrun_ranks_read_disjoint_shards_of_the_global_order(tmp_path: Path) -> None:
    """torchrun --nproc_per_node=2 (gloo, localhost), Keras on torch, 2 workers per rank."""
    out = tmp_path / "ids.jsonl"
    run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            str(SCRIPT), "--out", str(out), "--engine", "torch", "--num-workers", "2",
            "--epochs", str(EPOCHS), "--num-samples", str(NUM_SAMPLES),
            "--batch-size", str(BATCH_SIZE), "--seed", str(SEED),
        ]
    )  # fmt: skip
    assert_ranks_split_the_global_order(read_ranks([out], 2))


@pytest.mark.slow
@pytest.mark.backend("jax")
def test_jax_processes_read_disjoint_shards_of_the_global_order(tmp_path: Path) -> None:
    """Two JAX processes joined by jax.distributed.initialize on a localhost coordinator."""
    coordinator = f"127.0.0.1:{free_port()}"
    outs = [tmp_path / f"ids{r}.jsonl" for r in range(2)]
    processes = [
        subprocess.Popen(
            [
                sys.executable, str(SCRIPT), "--out", str(outs[r]), "--engine", "jax",
                "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(r),
                "--num-workers", "1", "--epochs", str(EPOCHS), "--num-samples", str(NUM_SAMPLES),
                "--batch-size", str(BATCH_SIZE), "--seed", str(SEED),
            ],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for r in range(2)
    ]  # fmt: skip
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output[-3000:]
    assert_ranks_split_the_global_order(read_ranks(outs, 2))


def test_without_an_engine_a_loader_reads_everything() -> None:
    """shard="auto" with no distributed engine initialised reads the whole epoch."""
    loader = kloader.Loader(IdDataset(10), batch_size=4)
    assert (loader.shard_index, loader.num_shards, loader.shard_engine) == (0, 1, "none")


@pytest.mark.backend("tensorflow")
def test_a_loader_made_before_the_engine_started_is_refused_at_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """shard="auto" found no engine when the loader was made; one started since (here TF_CONFIG,
    as torch.distributed after init_process_group): fit refuses, where every process would have
    trained on every sample without a word."""
    loader = kloader.Loader(IdDataset(12), batch_size=2, seed=1)
    cluster = {"worker": ["localhost:2", "localhost:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    with pytest.raises(ValueError, match=r"made before tensorflow was initialised.*this process is 1 of 2"):
        id_model(IdRecorder()).fit(loader, epochs=1, verbose=0)
    explicit = kloader.Loader(IdDataset(12), batch_size=2, seed=1, shard=None)
    id_model(IdRecorder()).fit(explicit, epochs=1, verbose=0)  # reading everything, as asked


@pytest.mark.backend("tensorflow")
def test_tensorflow_multi_worker_config_sets_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under TF_CONFIG (what MultiWorkerMirroredStrategy reads) a worker reads its task's shard."""
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2", "localhost:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    loader = kloader.Loader(IdDataset(12), batch_size=2, seed=1)
    assert (loader.shard_index, loader.num_shards, loader.shard_engine) == (2, 3, "tensorflow")
