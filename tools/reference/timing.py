"""CUDA-event timing shared by the PyTorch benchmark scripts."""
import statistics

import torch


def time_ms(fn, reps=20, warmup=3):
    """Median milliseconds of `fn` over `reps` calls, each between two CUDA events, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
