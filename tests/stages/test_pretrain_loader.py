"""Pretraining data loading: worker processes and pinned memory change how batches arrive, never which."""
from __future__ import annotations

import pytest
import torch

from test_pretrain import envelope, write_artifacts


@pytest.mark.parametrize("workers, threads, on_gpu, expected", [
    (None, 1, False, (0, False)),   # one thread: it trains, nothing left for workers
    (None, 3, True, (2, True)),
    (None, 16, True, (4, True)),    # at most 4: a memmap reader is cheap
    (3, 1, False, (3, False)),      # the spec's count wins; pinning only for a GPU
])
def test_loader_settings(workers, threads, on_gpu, expected):
    from runtime.pretrain import loader_settings

    assert loader_settings(workers, threads, on_gpu) == expected


def test_worker_processes_yield_the_same_batches_across_epochs_and_a_resume(tmp_path):
    from olmo.config import TrainConfig

    from runtime.pretrain import olmo_train
    from runtime.pretrain import Config, build_train_config, token_files

    inputs = write_artifacts(tmp_path, n_documents=40)
    cfg = Config.model_validate(envelope(tmp_path, inputs)["config"])

    def stream(workers: int, start: int, max_steps: int) -> list[torch.Tensor]:
        built = build_train_config(
            cfg, data_paths=token_files(tmp_path / inputs["mix"]), tokenizer_file=tmp_path / "t.json",
            save_folder=tmp_path / f"save-{workers}-{start}", world_size=1, precision="fp32", run_name="x",
            data_workers=workers,
        )
        assert built.data.num_workers == workers and built.data.pin_memory is False
        path = tmp_path / f"{workers}-{start}.yaml"
        built.save(path)
        return [b["input_ids"] for b in olmo_train.batches(TrainConfig.load(path), start, max_steps)]

    plain = stream(0, 0, 12)
    tokens = sum(f.stat().st_size // 2 for f in token_files(tmp_path / inputs["mix"]))  # uint16 memmaps
    steps_per_epoch = tokens // cfg.train.sequence_length // cfg.train.global_batch_size
    assert steps_per_epoch < 12  # the 12 steps cross an epoch boundary (a reshuffle)
    for got in (stream(2, 0, 12), [*plain[:5], *stream(2, 5, 12)]):
        assert len(got) == len(plain) and all(torch.equal(a, b) for a, b in zip(got, plain))


def test_a_stop_signal_sent_to_every_process_leaves_the_workers_running(tmp_path):
    """SLURM signals every process of a job: the workers must leave the stop to the training process
    (which finishes its step and saves) instead of dying and failing that step."""
    import multiprocessing
    import os
    import signal
    import time

    from olmo.config import TrainConfig

    from runtime.pretrain import olmo_train
    from runtime.pretrain import Config, build_train_config, token_files

    inputs = write_artifacts(tmp_path, n_documents=40)
    cfg = Config.model_validate(envelope(tmp_path, inputs)["config"])
    built = build_train_config(
        cfg, data_paths=token_files(tmp_path / inputs["mix"]), tokenizer_file=tmp_path / "t.json",
        save_folder=tmp_path / "save", world_size=1, precision="fp32", run_name="x", data_workers=2,
    )
    built.save(tmp_path / "c.yaml")
    train_cfg = TrainConfig.load(tmp_path / "c.yaml")
    plain = [b["input_ids"] for b in olmo_train.batches(train_cfg, 0, 3)]   # one epoch: one set of workers
    stream = olmo_train.batches(train_cfg, 0, 3)
    got = [next(stream)["input_ids"]]
    time.sleep(1)  # both workers past their init (a signal before it is the default: a test race only)
    workers = multiprocessing.active_children()
    assert workers, "the loader started no worker processes"
    for worker in workers:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            os.kill(worker.pid, sig)
    got += [b["input_ids"] for b in stream]
    assert len(got) == len(plain) and all(torch.equal(a, b) for a, b in zip(got, plain))
