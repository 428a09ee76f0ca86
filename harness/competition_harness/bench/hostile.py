"""Figure l: what one hostile line costs (issue 33). A closed segment that expands to a single line
of 100, 200 and 400 MB is read and parsed as a run reads it (``parse_window``), each in a child
process of its own so that its peak RSS is its own. The line is over the contract's 64 KiB limit,
so it must be rejected without being held: peak RSS flat across sizes and time linear in the
bytes (same-run ratios: 400 MB / 100 MB time about 4, RSS about 1). On main it was quadratic
(1.6 / 4.6 / 18.3 s) and held the line whole (a 200 MB line peaked at 535 MB)."""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from competition_harness.bench.common import BENCH_WINDOW
from competition_pipeline.fills.journal import JournalSource, window_dir
from competition_pipeline.recording.fill_events import parse_window

SIZES_MB = (100, 200, 400)


def write_long_line(journal: Path, megabytes: int) -> Path:
    directory = window_dir(journal, BENCH_WINDOW)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "long.jsonl.gz"
    block = b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(b'{"type":"OrderFilled","pad":"')
        for _ in range(megabytes):
            handle.write(block)
        handle.write(b'"}\n')
    return path


def child(journal: str) -> dict:
    """In the child: read and parse the window as a run does; its time and peak RSS."""
    started = time.perf_counter()
    rejects = [r for _, batch in parse_window(JournalSource(journal), BENCH_WINDOW) for r in batch]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rejects": len(rejects),
        "kept_bytes": sum(len(r.raw_line) for r in rejects),
        "reason": rejects[0].reason[:60] if rejects else None,
    }


def long_line_figure(sizes_mb: tuple[int, ...] = SIZES_MB) -> dict:
    out: dict = {"sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in sizes_mb:
            journal = Path(tmp) / f"j{megabytes}"
            write_long_line(journal, megabytes)
            done = subprocess.run(
                [sys.executable, "-m", "competition_harness.bench.hostile", str(journal)],
                capture_output=True,
                text=True,
                check=True,
            )
            out["sizes"][megabytes] = json.loads(done.stdout)
    first, last = out["sizes"][sizes_mb[0]], out["sizes"][sizes_mb[-1]]
    out["ratios"] = {
        "bytes": sizes_mb[-1] / sizes_mb[0],
        "seconds": last["seconds"] / first["seconds"],
        "peak_rss": last["peak_rss_mib"] / first["peak_rss_mib"],
    }
    return out


def l_table(result: dict) -> str:
    lines = [f"{'l. one line of':<16} {'seconds':>9} {'MB/s':>8} {'peak RSS MiB':>13} {'kept':>6}"]
    for megabytes, row in result["sizes"].items():
        lines.append(
            f"{str(megabytes) + ' MB':<16} {row['seconds']:>9.2f} "
            f"{int(megabytes) / row['seconds']:>8.0f} {row['peak_rss_mib']:>13.0f} "
            f"{row['kept_bytes']:>6}"
        )
    r = result["ratios"]
    lines.append(
        f"{r['bytes']:.0f}x the bytes: {r['seconds']:.2f}x the time,"
        f" {r['peak_rss']:.2f}x the peak RSS"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))
