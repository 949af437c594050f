"""Training benchmark: the real training loop against the pure model step, S-CNN-All, batch 64.

- **pure step**: ``train_step`` (SGD, ``BCEWithLogitsLoss``) of S-CNN-All on one fixed batch of
  64 random ``(12, 120, 120)`` float32 inputs already on the device: the compute floor.
- **loop**: ``bigearthnet.train.launch.train`` itself on a Parquet dataset in the build's layout
  (uncompressed tensor columns, row groups of 448/300/116 rows, 3 files): the loader
  (row-group reading, 1024-row shuffle buffer), the ``BatchTransform`` on the training device
  (normalisation, bicubic upsampling of the 20 m and 60 m bands) and the same step. Its rate is
  the epoch's ``img_per_s_steady`` from ``train_log.jsonl``: training images per second after
  the epoch's first batch (which waits for the shuffle buffer to fill, a cost a real epoch of
  thousands of steps amortises), in the second epoch of the process (the first is warm-up).

Both run with the run's settings (deterministic algorithms on, as in ``conf/paper.yaml``).
Every repetition is one fresh interpreter that measures the pure step and then the loop, so
the two see the same background load; ``ratio_vs_pure_step`` is the median over repetitions
of loop / pure. The loop is measured with ``num_workers`` 0 (reading in the training process)
and 1 (one DataLoader worker process, ``conf/paper.yaml``'s setting). If CUDA is available the
same is measured on the GPU.
"""

from __future__ import annotations

import json
import textwrap

from common import CACHE, median, run_measured, write_result

ROWS_PER_FILE = (448, 300, 116)
FILES = 3
VAL_ROWS = 64
BATCH = 64
STEPS = 10  # per epoch and for the pure step
WARMUP = 3  # pure-step warm-up steps

CHILD = textwrap.dedent("""
    import json, os, tempfile, time
    import torch
    from torch import nn
    from bigearthnet.train.config import TrainConfig
    from bigearthnet.train.launch import train
    from bigearthnet.train.loop import Determinism, make_optimizer, train_step
    from bigearthnet.train.models import build_model

    device = torch.device({device!r})
    out = tempfile.mkdtemp(prefix="bench-train-")
    cfg = TrainConfig(dataset={dataset!r}, out=out + "/run", model="s-cnn-all", batch_size={batch},
                      epochs=2, max_steps_per_epoch={steps}, num_workers={workers},
                      device={device!r}, progress=False, seed=0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with Determinism(cfg.deterministic, device):
        torch.manual_seed(0)
        model = build_model("s-cnn-all", 43).to(device)
        opt = make_optimizer(model, cfg)
        loss_fn = nn.BCEWithLogitsLoss()
        x = torch.randn({batch}, 12, 120, 120, device=device)
        y = (torch.rand({batch}, 43, device=device) < 0.1).float()
        for _ in range({warmup}):
            train_step(model, opt, loss_fn, x, y)
        sync()
        t0 = time.perf_counter()
        for _ in range({steps}):
            train_step(model, opt, loss_fn, x, y)
        sync()
        pure = {batch} * {steps} / (time.perf_counter() - t0)
        del model, opt, x, y
    result = train(cfg)
    epochs = result["history"]
    import shutil; shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({{"pure_img_per_s": pure, "loop_img_per_s": epochs[-1]["img_per_s_steady"],
                      "loop_img_per_s_with_first_batch": epochs[-1]["img_per_s"],
                      "loop_first_epoch_img_per_s": epochs[0]["img_per_s"],
                      "threads": torch.get_num_threads(),
                      "device_name": (torch.cuda.get_device_name(device)
                                      if device.type == "cuda" else "cpu")}}))
""")


def bench_dataset() -> str:
    """Write (once) the benchmark dataset: train split in the build's layout, small validation.

    The package's fake factory (``learnable`` recipe: the columns training reads) writes it.
    """
    out = CACHE / "train_dataset"
    if (out / "_SUCCESS").exists():
        return str(out)
    import shutil

    from bigearthnet.dataset.fakes import write_fake_dataset

    shutil.rmtree(out, ignore_errors=True)
    layout = {"train": [list(ROWS_PER_FILE)] * FILES, "validation": [[VAL_ROWS]]}
    write_fake_dataset(out, layout, recipe="learnable", seed=0)
    return str(out)


def bench_device(device: str, workers: int, reps: int) -> dict:
    """``reps`` fresh processes, each measuring the pure step and the loop."""
    dataset = bench_dataset()
    runs = [run_measured(CHILD.format(device=device, dataset=dataset, batch=BATCH, steps=STEPS,
                                      warmup=WARMUP, workers=workers))
            for _ in range(reps)]
    ratios = [r["loop_img_per_s"] / r["pure_img_per_s"] for r in runs]
    return {
        "device": device, "device_name": runs[0]["device_name"], "num_workers": workers,
        "torch_threads": runs[0]["threads"], "reps": reps,
        "pure_step_img_per_s": median([r["pure_img_per_s"] for r in runs]),
        "loop_img_per_s": median([r["loop_img_per_s"] for r in runs]),
        "loop_img_per_s_with_first_batch": median(
            [r["loop_img_per_s_with_first_batch"] for r in runs]),
        "loop_first_epoch_img_per_s": median([r["loop_first_epoch_img_per_s"] for r in runs]),
        "ratio_vs_pure_step": median(ratios),
        "ratios_each": [round(x, 4) for x in ratios],
    }


def main(reps: int = 3) -> dict:
    """Measure on the CPU (0 and 1 loader workers) and on CUDA when present; write train.json."""
    import torch

    cpu0 = bench_device("cpu", 0, reps)
    cpu1 = bench_device("cpu", 1, reps)
    cuda = bench_device("cuda", 1, reps) if torch.cuda.is_available() else None
    headline = cuda or cpu1
    doc = {
        "model": "s-cnn-all", "batch_size": BATCH, "steps_per_measurement": STEPS,
        "dataset": {"files": FILES, "row_groups_per_file": list(ROWS_PER_FILE),
                    "rows": FILES * sum(ROWS_PER_FILE), "tensor_compression": "none"},
        "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
        "cpu_workers0": cpu0, "cpu_workers1": cpu1, "cuda": cuda,
        "ratio_vs_pure_step": headline["ratio_vs_pure_step"],
        "ratio_vs_pure_step_cpu_workers0": cpu0["ratio_vs_pure_step"],
        "ratio_vs_pure_step_cpu_workers1": cpu1["ratio_vs_pure_step"],
        "s_cnn_all_img_per_s_cpu": cpu1["loop_img_per_s"],
        "s_cnn_all_img_per_s_cuda": None if cuda is None else cuda["loop_img_per_s"],
        "targets": {"ratio_vs_pure_step": 0.9},
        "note": "headline ratio: CUDA when available, else CPU with 1 loader worker "
                "(conf/paper.yaml); loop rates exclude each epoch's first batch (shuffle "
                "buffer fill) and the first epoch of each process",
    }
    path = write_result("train", doc)
    print(json.dumps({k: doc[k] for k in doc if k.startswith(("ratio", "s_cnn"))}))
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
