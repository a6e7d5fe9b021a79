#!/usr/bin/env python3
"""Per-message costs from two callgrind profiles of the same scenario.

The two runs differ only in the message count (N1 < N2, same warm-up), so every cost
that does not depend on the count (start-up, connecting, warm-up) cancels out:
cost per message = (cost(N2) - cost(N1)) / (N2 - N1).

  callgrind_marginal.py top FILE1 N1 FILE2 N2 [TOP]
      total Ir/message; the TOP functions by self and by inclusive Ir/message;
      calls/message of allocation, reference-counting, locking and I/O functions
  callgrind_marginal.py callers FILE1 N1 FILE2 N2 REGEX [TOP]
      who calls the functions matching REGEX: calls/message and inclusive Ir/message
      per caller

Swift names are demangled with `swift demangle --simplified` when swift is on PATH."""
import collections
import re
import subprocess
import sys


def parse(path):
    """Self cost per function, and (caller, callee) -> [calls, inclusive cost]."""
    names = {}
    self_cost = collections.Counter()
    edges = collections.defaultdict(lambda: [0, 0])
    total = 0
    fn = cfn = None
    call_cost_next = False

    def name(value):
        match = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not match:
            return value
        if match.group(2):
            names[match.group(1)] = match.group(2)
        return names.get(match.group(1), match.group(1))

    with open(path, errors="replace") as file:
        for line in file:
            line = line.rstrip("\n")
            if call_cost_next:
                parts = line.split()
                if len(parts) >= 2:
                    edges[(fn, cfn)][1] += int(parts[1])
                call_cost_next = False
            elif line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                cfn = name(line[4:])
            elif line.startswith("calls="):
                edges[(fn, cfn)][0] += int(line[6:].split()[0])
                call_cost_next = True
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    self_cost[fn] += int(parts[1])
            elif line.startswith(("fl=", "fi=", "fe=", "ob=", "cob=", "cfi=", "cfl=")):
                # File and object names share the compression scheme but not the table.
                pass
    inclusive = collections.Counter()
    for (caller, callee), (_, cost) in edges.items():
        if caller != callee:
            inclusive[callee] += cost
    # A function's inclusive cost: its own plus what its calls cost (recursion counted once).
    outgoing = collections.Counter()
    for (caller, callee), (_, cost) in edges.items():
        if caller != callee:
            outgoing[caller] += cost
    inclusive_cost = {f: self_cost[f] + outgoing[f] for f in set(self_cost) | set(outgoing)}
    return total, self_cost, inclusive_cost, edges


def demangle(names):
    try:
        out = subprocess.run(["swift", "demangle", "--simplified"], input="\n".join(names),
                             capture_output=True, text=True, check=True).stdout.splitlines()
        return out if len(out) == len(names) else names
    except (OSError, subprocess.CalledProcessError):
        return names


def top(args):
    f1, n1, f2, n2 = args[0], int(args[1]), args[2], int(args[3])
    limit = int(args[4]) if len(args) > 4 else 30
    t1, s1, i1, e1 = parse(f1)
    t2, s2, i2, e2 = parse(f2)
    delta = n2 - n1
    per_message = (t2 - t1) / delta
    print(f"total: {per_message:.0f} Ir/message  ({t1:,} Ir for {n1} messages, {t2:,} Ir for {n2})")

    def table(a, b, title):
        rows = [((b.get(k, 0) - a.get(k, 0)) / delta, k) for k in set(a) | set(b)]
        # Async functions resume through the executor, which callgrind sees as recursion
        # (names ending in 'N): their inclusive costs count cycles many times; leave them out.
        rows = sorted((r for r in rows if 1 <= r[0] <= per_message * 1.001 and not re.search(r"'\d+$", r[1])),
                      reverse=True)[:limit]
        print(f"\n{title}")
        for (value, _), label in zip(rows, demangle([k for _, k in rows])):
            print(f"{value:10.0f} {100 * value / per_message:6.1f}%  {label[:150]}")

    table(s1, s2, "self Ir/message")
    table(i1, i2, "inclusive Ir/message")
    watched = ["malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "free", "swift_allocObject",
               "swift_task_alloc", "swift_retain", "swift_release", "swift_bridgeObjectRetain",
               "swift_bridgeObjectRelease", "swift_beginAccess", "pthread_mutex_lock", "swift_task_switch",
               "swift_continuation_resume", "swift_getGenericMetadata", "send", "recv", "poll", "read", "write"]
    calls1, calls2 = collections.Counter(), collections.Counter()
    for edges, calls in ((e1, calls1), (e2, calls2)):
        for (_, callee), (count, _) in edges.items():
            base = re.sub(r"(@@GLIBC.*|'\d+)$", "", callee or "")
            calls[base] += count
    print("\ncalls/message")
    for function in watched:
        print(f"  {function:28s} {(calls2[function] - calls1[function]) / delta:9.3f}")


def callers(args):
    f1, n1, f2, n2, pattern = args[0], int(args[1]), args[2], int(args[3]), args[4]
    limit = int(args[5]) if len(args) > 5 else 15
    e1, e2 = parse(f1)[3], parse(f2)[3]
    delta = n2 - n1
    rows = []
    for key in set(e1) | set(e2):
        caller, callee = key
        if callee and re.search(pattern, callee):
            a, b = e1.get(key, [0, 0]), e2.get(key, [0, 0])
            rows.append(((b[0] - a[0]) / delta, (b[1] - a[1]) / delta, caller, callee))
    rows.sort(reverse=True)
    rows = rows[:limit]
    labels = demangle([f"{r[2]}" for r in rows] + [f"{r[3]}" for r in rows])
    print(f"{'calls/msg':>10} {'Ir/msg':>8}  caller -> callee")
    for index, row in enumerate(rows):
        print(f"{row[0]:10.3f} {row[1]:8.0f}  {labels[index][:100]}  ->  {labels[len(rows) + index][:60]}")


if __name__ == "__main__":
    if len(sys.argv) < 6 or sys.argv[1] not in ("top", "callers"):
        print(__doc__)
        sys.exit(2)
    (top if sys.argv[1] == "top" else callers)(sys.argv[2:])
