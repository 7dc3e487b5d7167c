"""benchmarks/cache.py end to end, bounded: the sentiment example, one-second points. The hits and
misses each point really had (read from the runtime's /metrics) are what the scenario says."""

from __future__ import annotations

import subprocess
import sys


def test_short_run_measures_no_cache_misses_and_hits(repo_root):
    completed = subprocess.run(
        [sys.executable, str(repo_root / "benchmarks/cache.py"), "--models", "sentiment",
         "--duration", "1", "--warmup", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in completed.stdout.splitlines()
        if line.startswith("| sentiment ")
    ]
    loads = ("1 x 32", "16 x 32", "128 x 8")
    assert [(row[1], row[2]) for row in rows] == [(load, "none") for load in loads] + [
        (load, cache) for load in loads for cache in ("miss", "hit")
    ]
    for row in rows:
        _, _, cache, rate, _, _, _, errors, counted, runtime_cpu, redis_cpu = row
        assert float(rate.replace(",", "")) > 0 and errors == "0"
        assert float(runtime_cpu.replace(",", "")) > 0, row
        if cache != "none":
            assert float(redis_cpu.replace(",", "")) >= 0, row
        if cache == "none":
            assert counted == ""
            continue
        hits, misses = (float(n.replace(",", "")) for n in counted.split(" / "))
        if cache == "miss":
            assert hits == 0 and misses > 0, row
        else:
            assert misses == 0 and hits > 0, row
