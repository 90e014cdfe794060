"""The README's main job: the bundled Fashion-MNIST CNN compiled dense and low-rank for this host.

Both builds are verified against PyTorch; then accuracy on the real test set and batch-1 latency
are shown side by side with PyTorch eager. PyTorch is timed before TVM starts its thread pool
(TVM's pool slows PyTorch's threads down when both run in one process).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

DEMO_MODEL = "vgg-fmnist-deeptwist"  # dense structure, trained to decompose losslessly at DEMO_RANK
DEMO_RANK = "macs:0.25"
THREADS = 2


def _median_latency_ms(run, x, warmup: int = 10, repeat: int = 100) -> float:
    for _ in range(warmup):
        run(x)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(x)
        samples.append(time.perf_counter() - start)
    return 1e3 * float(np.median(samples))


def _accuracy(run, images, labels) -> float:
    predictions = [int(np.asarray(run(image[None])).argmax()) for image in images]
    return float(np.mean(np.asarray(predictions) == labels))


def run_demo(out_dir="build/demo", eval_images: int = 1000, rank=None, method: str = "tai") -> dict:
    from .api import compile_model
    from .build import load_executable, run_vm
    from .data import load_fashion_mnist
    from .database import shipped_database
    from .frontend import load_model
    from .models import create_model
    from .reference import lowrank_reference
    from .targets import host_cpu_target, load_target

    torch.set_num_threads(THREADS)
    rank = rank or DEMO_RANK
    target = host_cpu_target()
    out_dir = Path(out_dir)
    model = create_model(DEMO_MODEL)
    images, labels = load_fashion_mnist("test")
    images, labels = images[:eval_images], labels[:eval_images]
    example = torch.as_tensor(images[:1])

    database = shipped_database(load_target(target))  # schedules/<target>/, when tuned records ship
    tvm_label = "TVM (tuned)" if database else "TVM (untuned)"
    print(f"== {DEMO_MODEL} on {target}: dense and {method} ({rank}); schedules: "
          f"{database or 'ours, untuned (no database in schedules/)'} ==")
    dense = compile_model(model, target=target, method="dense", out=out_dir / "dense", example_input=example,
                          database=database)
    lowrank = compile_model(model, target=target, method=method, rank=rank, out=out_dir / "lowrank",
                            example_input=example, database=database)
    print(lowrank.report)
    print("dense:   " + dense.verification.summary().replace("\n", "\n         "))
    print("lowrank: " + lowrank.verification.summary().replace("\n", "\n         "))

    source = load_model(model, example)
    torch_dense = source.run
    torch_lowrank = lowrank_reference(source, lowrank.records)
    x = images[:1]
    rows = {"PyTorch eager": [torch_dense, torch_lowrank]}
    latency = {"PyTorch eager": [_median_latency_ms(run, x) for run in rows["PyTorch eager"]]}
    accuracy = {"PyTorch eager": [_accuracy(run, images, labels) for run in rows["PyTorch eager"]]}
    vms = [load_executable(result.artifact.library_path) for result in (dense, lowrank)]
    tvm_runs = [lambda x, vm=vm: run_vm(vm, x) for vm in vms]
    latency[tvm_label] = [_median_latency_ms(run, x) for run in tvm_runs]
    accuracy[tvm_label] = [_accuracy(run, images, labels) for run in tvm_runs]

    mac_reduction = lowrank.artifact.manifest["totals"]["mac_reduction"]
    print(f"\n{len(images)} Fashion-MNIST test images, batch 1, {THREADS} threads; "
          f"low-rank has {mac_reduction:.2f}x fewer conv MACs")
    print(f"{'runtime':16s} {'dense acc':>9s} {'lowrank acc':>11s} {'dense ms':>9s} {'lowrank ms':>10s} {'speed-up':>8s}")
    for name in latency:
        (dense_acc, low_acc), (dense_ms, low_ms) = accuracy[name], latency[name]
        print(f"{name:16s} {dense_acc:9.4f} {low_acc:11.4f} {dense_ms:9.3f} {low_ms:10.3f} {dense_ms / low_ms:7.2f}x")
    return {"accuracy": accuracy, "latency_ms": latency, "mac_reduction": mac_reduction}
