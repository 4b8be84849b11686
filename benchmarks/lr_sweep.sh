#!/bin/sh
# The check of `deepnet lr-find` in docs/diagnose.md: train the MNIST MLP for one epoch at
# each of a few fixed rates and print the validation loss and accuracy of each.
#   DEEPNET_DATA=../shared/data sh benchmarks/lr_sweep.sh
for lr in 0.0001 0.0003 0.001 0.003 0.01 0.03; do
  printf "lr %s  " "$lr"
  .venv/bin/deepnet train -c examples/mnist-mlp.yaml --epochs 1 --lr "$lr" --out "runs/lr-sweep-$lr" --quiet \
    train.schedule=constant train.warmup_epochs=0 "$@" >/dev/null
  .venv/bin/python -c "import csv,sys; r=list(csv.DictReader(open('runs/lr-sweep-$lr/history.csv')))[-1]; print(f\"val_loss {float(r['val_loss']):.4f}  val_accuracy {100*float(r['val_accuracy']):.2f}%\")"
done
