"""Trains a small model on a kloader.Loader and writes the ids of every batch it trained on.

Run by the tests as a separate process: under torchrun, as one of several JAX
processes, or as a training run that is killed and restarted. One JSON line
per trained batch is appended to --out with a single os.write, so a SIGKILL
never leaves half a line and never loses a line already written.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--engine", choices=["none", "torch", "jax"], default="none")
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=22)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--backup", default="")
    parser.add_argument("--save-freq", type=int, default=3)
    parser.add_argument("--kill-after", type=int, default=0, help="SIGKILL this process after N batches")
    return parser.parse_args()


def start_engine(args: argparse.Namespace) -> None:
    if args.engine == "torch":
        import torch.distributed

        torch.distributed.init_process_group("gloo")
    elif args.engine == "jax":
        import jax

        jax.distributed.initialize(
            args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )


def main() -> None:
    args = parse()
    start_engine(args)
    import keras

    import kloader

    from keras_utils import IdRecorder, id_model
    from utils import IdDataset, jitter

    loader = kloader.Loader(
        IdDataset(args.num_samples),
        batch_size=args.batch_size,
        seed=args.seed,
        transform=jitter,
        num_workers=args.num_workers,
    )
    recorder = IdRecorder()
    output = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    class Write(keras.callbacks.Callback):
        """Appends each trained batch's ids to --out; kills the process after --kill-after batches."""

        written = 0

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            recorder._flush()
            for ids in recorder.train_ids()[self.written :]:
                line = {
                    "shard": [loader.shard_index, loader.num_shards],
                    "engine": loader.shard_engine,
                    "ids": ids,
                }
                os.write(output, (json.dumps(line) + "\n").encode())
                self.written += 1
            if args.kill_after and self.written >= args.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks: list[keras.callbacks.Callback] = [recorder, Write()]
    if args.backup:
        callbacks.append(kloader.BackupAndRestore(loader, args.backup, save_freq=args.save_freq))
    model = id_model(recorder)
    model.fit(loader, epochs=args.epochs, verbose=0, callbacks=callbacks)


if __name__ == "__main__":
    main()
