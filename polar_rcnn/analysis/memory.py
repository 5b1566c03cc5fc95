"""Process memory for the benchmarks: peak memory of a block (CUDA allocator or peak RSS), runs in a
fresh process, and the resident memory of a process and its children (data-loader workers)."""
import ctypes
import gc
import os
import re
import resource
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Dict, List, Optional

import torch


MB = 1024.0 * 1024.0


# ------------------------------------------------------------------------------------- memory
def _status_kb(key: str, pid: str = "self") -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM, else ``ru_maxrss``) in MiB."""
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so that RSS counts what is in use."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Memory a block needs on top of what was resident before it (MiB): on CUDA the allocator's
    peak minus its allocation at the start; on CPU this process's peak RSS (VmHWM, reset at the
    start where Linux allows; freed heap memory is returned to the OS first) minus its RSS at the
    start. Models, optimizer state and other variants resident before the block are not counted;
    activations, gradients and temporaries are."""

    def __init__(self, device: torch.device):
        self.device = device
        self.value_mb = 0.0
        self._start = 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / MB
        else:
            gc.collect()
            _malloc_trim()
            self._reset = _reset_peak_rss()
            self._start = (_status_kb("VmRSS") or 0) / 1024.0
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.value_mb = torch.cuda.max_memory_allocated(self.device) / MB - self._start
        elif self._reset:
            self.value_mb = peak_rss_mb() - self._start
        else:
            self.value_mb = float("nan")
        return False


def run_in_fresh_process(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a new (spawned) Python process; returns its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1) as ex:
        return ex.submit(fn, *args, **kwargs).result()

def _smaps_rollup_kb(pid: int) -> Dict[str, int]:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", f.read(), re.M)}
    except OSError:
        return {}


def child_pids(pid: Optional[int] = None) -> List[int]:
    """Live child processes of ``pid`` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def process_memory_mb(pid: int) -> Dict[str, Optional[float]]:
    """VmRSS and USS (private clean + dirty, from smaps_rollup; None where unavailable) in MiB."""
    rss = _status_kb("VmRSS", str(pid))
    roll = _smaps_rollup_kb(pid)
    uss = roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0) if roll else None
    return {"rss_mb": rss / 1024.0 if rss is not None else None, "uss_mb": uss / 1024.0 if uss is not None else None}
