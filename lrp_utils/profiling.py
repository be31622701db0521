"""Timing and memory: the one implementation the notebooks and ``benchmarks/`` share.

* :class:`Clock`: wall and process-CPU seconds accumulated per key (a study's explanations vs its
  leave-one-out runs).  CPU seconds count every thread of this process and are robust to other
  jobs on the machine; wall seconds are what a user waits.
* :func:`best_of`: the fastest of a few runs of one call (after a warm-up).
* :func:`paired_times` / :func:`paired_ratio`: interleaved timing of several calls, so that slow
  drifts of the machine hit all of them alike; ratios are medians of per-round ratios.
* :func:`saved_bytes`: the memory an autograd graph keeps for its backward pass.
* :func:`rss_increase_mb` / :func:`peak_rss_mb`: the rise of the resident set during one call,
  measured in a fresh process (a process's high-water mark only ever grows, so it is meaningless
  for the second call of a session).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


class Clock:
    """Accumulates wall and process-CPU seconds per key: ``clock.measure(key)`` is a context,
    ``clock(key, fn)`` times one call and returns its result."""

    def __init__(self):
        self.wall: dict = {}
        self.cpu: dict = {}

    @contextlib.contextmanager
    def measure(self, key):
        w, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[key] = self.wall.get(key, 0.0) + time.perf_counter() - w
            self.cpu[key] = self.cpu.get(key, 0.0) + time.process_time() - c

    def __call__(self, key, fn):
        with self.measure(key):
            return fn()


def best_of(fn, repeats: int, warm_up: bool = True) -> tuple[float, float]:
    """``(wall, cpu)``: the fastest of ``repeats`` runs of ``fn()`` (after an untimed warm-up run)
    in wall seconds and in CPU seconds of this process (all threads)."""
    if warm_up:
        fn()
    clocks = [Clock() for _ in range(repeats)]
    for clock in clocks:
        clock(0, fn)
    return min(c.wall[0] for c in clocks), min(c.cpu[0] for c in clocks)


def paired_times(fns: dict, budget_s: float = 3.0, min_rounds: int = 5, max_rounds: int = 40,
                 warm_up: bool = True) -> dict:
    """Interleaved timing of several callables: in every round each runs once, in turn.  Returns
    ``{name: [wall seconds per round]}``; rounds are added (``min_rounds .. max_rounds``) while the
    time spent stays within about ``budget_s``; ``warm_up``: one untimed call of each first
    (allocator, thread pool, first-call caches; skip it for calls of minutes)."""
    if warm_up:
        for fn in fns.values():
            fn()
    out, t0 = {name: [] for name in fns}, time.perf_counter()
    while len(out[next(iter(fns))]) < max_rounds:
        spent, done = time.perf_counter() - t0, len(out[next(iter(fns))])
        if done >= min_rounds and spent * (done + 1) / max(done, 1) > budget_s:
            break
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def paired_ratio(times: dict, name: str, base: str) -> float:
    """Median over rounds of ``time[name] / time[base]`` (paired: same round, same machine state);
    NaN when ``name`` was not timed."""
    if name not in times:
        return float("nan")
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def saved_bytes(model, fn) -> int:
    """Bytes of the tensors autograd saves for the backward while ``fn()`` runs (each storage
    counted once, the model's parameters excluded).  Every counted storage is held until ``fn()``
    returns, so the allocator cannot hand a freed one's address to a later tensor (which would merge
    two storages into one count and make the total vary from call to call)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict = {}
    held = []

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            held.append(s)
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def rss_increase_mb(fn) -> float:
    """Peak of this process's resident set while ``fn()`` runs, minus the resident set before (MiB).
    Resets the kernel's high-water mark first (``/proc/self/clear_refs``, Linux)."""
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def peak_rss_mb(script: str, *args) -> float:
    """Peak resident-memory increase (MiB) of one call, measured in a fresh process:
    ``python script --mem-child *args`` builds its model and prints :func:`rss_increase_mb` of the
    call as its last line.  The child runs with a fixed glibc mmap threshold, so every large
    tensor is its own mapping, given back to the system when freed: the resident set then
    follows the live tensors."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, script, "--mem-child", *map(str, args)], check=True,
                         capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])
