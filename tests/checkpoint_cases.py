"""The small run that the checkpoint and resume tests train, interrupt and resume."""

from __future__ import annotations

import torch

import deepnet as dn
from tests.conftest import blobs

STEPS_PER_EPOCH = 12  # 200 training rows / batch 16, last partial batch dropped
EPOCHS = 3

# Dropout, noise augmentation and a warmup + cosine schedule: every random stream and the
# schedule's position must survive the interruption for the weights to match bit for bit.
OPTIONS = dict(epochs=EPOCHS, batch_size=16, seed=3, deterministic=True, threads=1, quiet=True,
               augment={"noise": 0.1}, schedule="cosine", warmup_epochs=1, checkpoint_steps=5,
               keep_checkpoints=2)


def make_data() -> dn.Dataset:
    return blobs(n=600)


def make_model(data: dn.Dataset) -> torch.nn.Module:
    torch.manual_seed(0)
    return dn.create_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes, width=32, dropout=0.3)
