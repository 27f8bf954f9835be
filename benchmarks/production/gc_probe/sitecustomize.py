"""How much of a process's CPU its garbage collector takes: ``profile.py --gc-probe``.

``profile.py`` puts this folder on the ``PYTHONPATH`` of every process it deploys, so Python
imports this file at start-up in each of them. With ``NERVENET_GC_PROBE_DIR`` set, it times every
collection (``gc.callbacks``, thread CPU time) and writes ``gc-PID.json`` there at exit. A probe
rather than py-spy: a sampling profiler charges a collection to whatever allocation set it off.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time

_DIR = os.environ.get("NERVENET_GC_PROBE_DIR")

if _DIR:
    _started: list[float] = []
    _seconds = [0.0, 0.0, 0.0]
    _collections = [0, 0, 0]

    def _time_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[:] = [time.thread_time()]
        elif _started:
            generation = info["generation"]
            _seconds[generation] += time.thread_time() - _started[0]
            _collections[generation] += 1

    def _write() -> None:
        record = {
            "argv": " ".join(sys.argv)[:200],
            "cpu_s": time.process_time(),
            "gc_s": sum(_seconds),
            "gc_s_by_generation": _seconds,
            "collections": _collections,
            "threshold": gc.get_threshold(),
            "frozen": gc.get_freeze_count(),
        }
        with open(os.path.join(str(_DIR), f"gc-{os.getpid()}.json"), "w") as f:
            json.dump(record, f)

    gc.callbacks.append(_time_collection)
    atexit.register(_write)
