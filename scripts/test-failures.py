#!/usr/bin/env python3
"""Names the failed tests of a scripts/test.sh run, one line each with the
first issue they recorded, so that a summary that is all a CI page keeps still
says what failed. Arguments: the results directory, then Swift Testing's xUnit
files. At most 12 lines."""
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

results, xmls = sys.argv[1], sys.argv[2:]
found = []


def add(line):
    line = " ".join(line.split())
    if line not in found:
        found.append(line)


# XCTest: "Test Case 'Suite.test' failed", its issues as "error: ... : message".
for log in sorted(glob.glob(f"{results}/*.log")):
    step = os.path.basename(log)[:-4]
    first_issue = {}
    with open(log, errors="replace") as f:
        for line in f:
            m = re.search(r"error: .*?[ .](test\w*)\]? : (.*)", line)
            if m:
                first_issue.setdefault(m.group(1), m.group(2))
            m = re.match(r"Test Case '(?:-\[)?([\w.]+)[ .](\w+)\]?' failed", line)
            if m:
                add(f"{step}: {m.group(1)}.{m.group(2)}: {first_issue.get(m.group(2), '')}")

# Swift Testing: a testcase with a failure element in the xUnit file.
for x in xmls:
    if not os.path.exists(x):
        continue
    step = os.path.basename(x)[:-4]
    try:
        cases = ET.parse(x).iter("testcase")
    except ET.ParseError:
        continue
    for tc in cases:
        bad = tc.find("failure")
        if bad is None:
            bad = tc.find("error")
        if bad is not None:
            message = bad.get("message") or (bad.text or "")
            add(f"{step}: {tc.get('classname', '')}.{tc.get('name', '')}: {message}")

for line in found[:12]:
    print("  failed: " + line[:400])
if len(found) > 12:
    print(f"  failed: ... and {len(found) - 12} more")
