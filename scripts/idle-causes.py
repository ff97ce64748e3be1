#!/usr/bin/env python3
"""Issue 16: where a load test's idle CPU time comes from.

Reads a `perf sched record` file (load-test.sh writes one per route with
SCHED_OUT=dir) and sums the machine's idle periods by three things: the
thread that went to sleep before the CPU went idle, what the other CPUs
were running at that moment, and the wake-up that ended the idle period
(which thread was woken, and by whom). On a small virtual machine every
idle period costs a halt and a wake-up of the virtual CPU, so the largest
rows name the hand-offs worth removing.

    scripts/idle-causes.py FILE.data [ROWS]

Thread names are shortened to their stem (`tokio-rt-worker`, `wrk`,
`qlearn-sqlite-w`...); `swapper` is the idle task.
"""
import collections
import re
import subprocess
import sys


def stem(comm):
    """A thread name without its trailing number (swapper/0 -> swapper)."""
    return re.sub(r"[/\-]?\d+$", "", comm)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "cpu,time,event,trace"],
        capture_output=True, text=True, check=True,
    ).stdout
    running = {}  # cpu -> the thread on it
    idle_since = {}  # cpu -> (time, went idle after, others' threads)
    woken = {}  # cpu -> (woken thread, waker) of the last wake-up aimed at it
    sums = collections.defaultdict(lambda: [0, 0.0])
    first = last = None
    for line in out.splitlines():
        m = re.match(r"\s*\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)", line)
        if not m:
            continue
        cpu, t, event, trace = int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
        first = t if first is None else first
        last = t
        if event == "sched_waking":
            w = re.search(r"comm=(.*?) pid=\d+ prio=\d+ target_cpu=(\d+)", trace)
            if w:
                woken[int(w.group(2))] = (stem(w.group(1)), stem(running.get(cpu, "?")))
        elif event == "sched_switch":
            s = re.search(r"prev_comm=(.*?) prev_pid=.*==> next_comm=(.*?) next_pid=", trace)
            if not s:
                continue
            prev, nxt = s.group(1), s.group(2)
            if nxt.startswith("swapper"):
                others = ",".join(sorted(stem(c) for k, c in running.items() if k != cpu)) or "?"
                idle_since[cpu] = (t, stem(prev), others)
                woken.pop(cpu, None)
            elif prev.startswith("swapper") and cpu in idle_since:
                t0, after, others = idle_since.pop(cpu)
                who, by = woken.get(cpu, ("?", "?"))
                row = sums[(after, others, f"{who} woken by {by}")]
                row[0] += 1
                row[1] += t - t0
            running[cpu] = nxt
    span = (last - first) if first is not None else 0.0
    total = sum(v[1] for v in sums.values())
    count = sum(v[0] for v in sums.values())
    print(f"{span:.2f} s recorded; idle {total * 1e3:.1f} ms in {count} periods "
          f"(counted from the first switch to idle on each CPU)")
    print(f"{'idle ms':>8} {'periods':>7} {'mean us':>7}  went idle after / other CPUs ran / ended by")
    for (after, others, end), (n, secs) in sorted(sums.items(), key=lambda kv: -kv[1][1])[:rows]:
        print(f"{secs * 1e3:8.1f} {n:7d} {secs / n * 1e6:7.0f}  {after} / {others} / {end}")


if __name__ == "__main__":
    main()
