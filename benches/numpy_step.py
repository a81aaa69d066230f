#!/usr/bin/env python3
"""A straightforward numpy implementation of one accelerated IHT step (ARCHITECTURE.md, "The IHT step") on the
paper-sized INR problem (n=784, d=1500, m=200, s=1000, sequential gates in the steady state),
timed in the same run as `spinr bench --backend cpu --size small --json`.

Usage: python3 benches/numpy_step.py [path/to/spinr]   (default: target/release/spinr)
Prints the median seconds per step of both and their ratio.
"""
import json
import subprocess
import sys
import time

import numpy as np

N, D, M, S, K = 784, 1500, 200, 1000, 10


def features(rng):
    side = 28
    b = rng.normal(0.0, 10.0, size=(D // 2, 2))
    b[0] = 0.0
    r, c = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
    v = np.stack([r.ravel(), c.ravel()], axis=1)
    ph = 2 * np.pi * (v @ b.T)
    return np.concatenate([np.sin(ph), np.cos(ph)], axis=1).astype(np.float32)


def loss_parts(x, gates, w, y):
    pred = ((x @ w.T) * gates).sum(axis=1)
    return pred - y


def step(x, y, w, h):
    gates = (x @ h.T) > 0  # n × m, fixed during the step
    r = loss_parts(x, gates, w, y)
    grad = (gates * r[:, None]).T @ x  # m × d
    g_s = grad * (w != 0)
    ag = ((x @ g_s.T) * gates).sum(axis=1)
    mu = (g_s ** 2).sum() / ((ag ** 2).sum() + 1e-8)
    c = w - mu * grad
    flat = np.abs(c).ravel()
    keep = np.argpartition(-flat, S - 1)[:S]
    v = np.zeros_like(flat)
    v[keep] = c.ravel()[keep]
    v = v.reshape(M, D)
    mask = v != 0
    for _ in range(K):  # refinement with exact line search
        r = loss_parts(x, gates, v, y)
        g = ((gates * r[:, None]).T @ x) * mask
        ag = ((x @ g.T) * gates).sum(axis=1)
        mu = (g ** 2).sum() / ((ag ** 2).sum() + 1e-8)
        v = v - mu * g
    return v


def main():
    spinr = sys.argv[1] if len(sys.argv) > 1 else "target/release/spinr"
    rng = np.random.default_rng(0)
    x = features(rng)
    y = (0.5 + 0.4 * np.sin(np.arange(N) * 0.013) * np.cos(np.arange(N) * 0.0007)).astype(np.float32)
    w = np.zeros(M * D, dtype=np.float32)
    idx = rng.choice(M * D, S, replace=False)
    w[idx] = rng.normal(0, 0.05, S)
    w = w.reshape(M, D)
    times = []
    for i in range(7):
        t = time.perf_counter()
        step(x, y, w, w)
        if i >= 2:
            times.append(time.perf_counter() - t)
    numpy_step = float(np.median(times))
    out = subprocess.run([spinr, "bench", "--backend", "cpu", "--size", "small", "--json"],
                         check=True, capture_output=True, text=True).stdout
    spinr_step = json.loads(out)["step_seconds"]
    print(f"numpy step (dense m×d, {np.__version__}): {numpy_step * 1e3:.1f} ms")
    print(f"spinr CPU step:                 {spinr_step * 1e3:.1f} ms")
    print(f"ratio spinr/numpy: {spinr_step / numpy_step:.3f}")


if __name__ == "__main__":
    main()
