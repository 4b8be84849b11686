"""Run by the checkpoint tests in a child process: train on blobs, and die on cue.

    python -m tests._train_child OUT DIE_AT HOW

HOW is ``none`` (train to the end), ``sigkill`` or ``sigterm`` (sent to itself right after
optimizer step DIE_AT), or ``sigkill-in-tensors`` / ``sigkill-in-json`` (killed while the
checkpoint written at step DIE_AT is half on disk). An interrupted run exits with the CLI's
code for it (143 after SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys

import deepnet as dn
from tests.checkpoint_cases import OPTIONS, make_model, make_data


class DieAt(dn.Callback):
    def __init__(self, step: int, how: str) -> None:
        self.step, self.how = step, how

    def on_train_begin(self, logs):
        self.trainer = logs["trainer"]

    def on_batch_end(self, batch, logs):
        if self.trainer.step == self.step and self.how in ("sigkill", "sigterm"):
            os.kill(os.getpid(), signal.SIGKILL if self.how == "sigkill" else signal.SIGTERM)


def die_while_writing(step: int, which: str) -> None:
    """Kill the process with the checkpoint of ``step`` half written: the tensor file (or
    the JSON) cut in half before its rename."""
    from deepnet.train import checkpoint

    real_write = checkpoint.atomic_write

    def write(path, writer):
        if path.name.startswith(f"step-{step:09d}.") and path.suffix == which:
            tmp = path.with_name(path.name + ".tmp")
            writer(tmp)
            data = tmp.read_bytes()
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(path, writer)

    checkpoint.atomic_write = write


def main() -> int:
    out, die_at, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if how.startswith("sigkill-in-"):
        die_while_writing(die_at, ".safetensors" if how == "sigkill-in-tensors" else ".json")
    data = make_data()
    try:
        dn.fit(make_model(data), data, out=out, callbacks=[DieAt(die_at, how)], **OPTIONS)
    except dn.TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
