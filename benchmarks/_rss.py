"""Peak resident memory of this process (Linux), resettable so that a benchmark's peak can exclude its setup."""

from pathlib import Path


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS counter (writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """The peak resident set size since the start or the last reset, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
