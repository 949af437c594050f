"""Totals of RELIABILITY.md from a real run of the fault tests.

Usage::

    python scripts/reliability_totals.py JUNIT.xml [FAULTS_SUMMARY.json] [--write RELIABILITY.md]

``JUNIT.xml`` is pytest's ``--junitxml`` of a run of the tests the table names (``make
reliability`` runs them); ``FAULTS_SUMMARY.json`` is what tests/faults/conftest.py writes
(``$BIGEARTHNET_FAULTS_SUMMARY``): how many faults each of those tests injected (a fuzz case is
one, an ``on_error: skip`` build over already counted cases none) and the bytes each lost. A test
outside tests/faults injects one fault per test case. A fault is survived when its test passed;
bytes lost are 0 for a passed test by its own assertions (byte-identical outputs, nothing
committed) and unknown for a failed one.

Prints the totals; with ``--write`` replaces the block between ``<!-- totals:begin -->`` and
``<!-- totals:end -->`` of RELIABILITY.md, and the per-row counts between ``<!-- rows:begin
-->`` and ``<!-- rows:end -->``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite_seconds(path: Path) -> float:
    """The run's wall time, from the JUnit test suite."""
    return sum(float(s.get("time", 0)) for s in ET.parse(path).getroot().iter("testsuite"))


def read_junit(path: Path) -> dict[str, str]:
    """nodeid -> passed | failed | skipped."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        nodeid = classname.replace(".", "/") + ".py::" + name
        kinds = {child.tag for child in case}
        out[nodeid] = ("failed" if kinds & {"failure", "error"} else
                       "skipped" if "skipped" in kinds else "passed")
    return out


def table_rows(text: str) -> list[tuple[str, list[str]]]:
    """(fault, test ids) of every row of the fault table."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith(("| fault", "|---")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        tests = re.findall(r"`(tests/[^`]+)`", cells[-1])
        if tests:
            rows.append((cells[0], tests))
    return rows


def count(junit: dict[str, str], summary: dict, rows: list[tuple[str, list[str]]]) -> dict:
    records = {r["test"]: r for r in summary.get("records", [])}
    per_row, seen = [], set()
    for fault, tests in rows:
        injected = survived = run = passed = skipped = 0
        lost: int | None = 0
        for nodeid, outcome in junit.items():
            if not any(nodeid == t or nodeid.startswith((t + "::", t + "[")) for t in tests):
                continue
            fresh = nodeid not in seen
            seen.add(nodeid)
            if outcome == "skipped":
                skipped += 1
                continue
            run += 1
            rec = records.get(nodeid)
            n = rec["injected"] if rec is not None else 1
            if outcome == "passed":
                passed += 1
                if fresh:
                    survived += n
                    lost = None if lost is None else lost + (rec["bytes_lost"] if rec else 0)
            else:
                lost = None
            if fresh:
                injected += n
        per_row.append({"fault": fault, "tests": tests, "test_cases": run, "passed": passed,
                        "skipped": skipped, "injected": injected, "survived": survived,
                        "bytes_lost": lost})
    total_lost = None if any(r["bytes_lost"] is None for r in per_row) else sum(
        r["bytes_lost"] for r in per_row)
    return {"rows": per_row, "faults_injected": sum(r["injected"] for r in per_row),
            "faults_survived": sum(r["survived"] for r in per_row), "bytes_lost": total_lost,
            "test_cases": sum(r["test_cases"] for r in per_row),
            "skipped": sum(r["skipped"] for r in per_row),
            "not_run": [r["fault"] for r in per_row if r["test_cases"] == 0]}


def render(totals: dict, junit_path: Path) -> tuple[str, str]:
    lost = "unknown (a test failed)" if totals["bytes_lost"] is None else str(totals["bytes_lost"])
    block = "\n".join([
        "| faults injected | faults survived | bytes lost | test cases run | skipped |",
        "|---:|---:|---:|---:|---:|",
        (f"| {totals['faults_injected']} | {totals['faults_survived']} | {lost} | "
         f"{totals['test_cases']} | {totals['skipped']} |"),
        "",
        f"Computed by `scripts/reliability_totals.py` from `{junit_path.name}` of a run on "
        f"{time.strftime('%Y-%m-%d')} (`make reliability`, {suite_seconds(junit_path):.0f} s on "
        "2 cores, all these tests together)."
        + (f" Not run: {', '.join(totals['not_run'])}." if totals["not_run"] else ""),
    ])
    rows = ["| fault (of the table above) | test cases | passed | faults injected | survived |",
            "|---|---:|---:|---:|---:|"]
    for r in totals["rows"]:
        rows.append(f"| {r['fault'][:70]} | {r['test_cases']} | {r['passed']} | {r['injected']} "
                    f"| {r['survived']} |")
    return block, "\n".join(rows)


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:begin -->)\n.*?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"RELIABILITY.md has no <!-- {name}:begin --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: f"{m.group(1)}\n{body}\n{m.group(2)}", text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path)
    parser.add_argument("summary", type=Path, nargs="?")
    parser.add_argument("--write", type=Path, help="RELIABILITY.md to update")
    args = parser.parse_args(argv)
    doc = args.write or ROOT / "RELIABILITY.md"
    summary = json.loads(args.summary.read_text()) if args.summary else {}
    totals = count(read_junit(args.junit), summary, table_rows(doc.read_text()))
    print(json.dumps({k: v for k, v in totals.items() if k != "rows"}, indent=2))
    if args.write:
        block, rows = render(totals, args.junit)
        text = replace_block(doc.read_text(), "totals", block)
        text = replace_block(text, "rows", rows)
        args.write.write_text(text)
        print(f"updated {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
