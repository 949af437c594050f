"""Fault tests: a log of the faults injected and survived, written as JSON at the end of a run.

Every test that takes ``fault_log`` injects faults (one by default); it passes when the fault was
survived (named error, nothing that looks complete, nothing lost). At the end of the session the
records go to ``<pytest basetemp>/faults_summary.json`` (and to ``$BIGEARTHNET_FAULTS_SUMMARY``
when set), with the totals RELIABILITY.md shows: faults injected, faults survived, bytes lost.
``scripts/reliability_totals.py`` renders them into RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_RECORDS: list[dict] = []


class FaultLog:
    """Per test: how many faults it injects, and what happened (called when it survived)."""

    def __init__(self, node):
        self.node = node
        self.injected = 1
        self.details: list[dict] = []

    def __call__(self, case: str, target: str, outcome: str, survived_cases: int | None = None,
                 bytes_lost: int = 0) -> None:
        """Record what the fault gave. ``survived_cases`` marks a check over faults counted by
        other tests (an ``on_error: skip`` build of them): it injects nothing new."""
        if survived_cases is not None:
            self.injected = 0
        self.details.append({"case": case, "target": target, "outcome": outcome,
                             "checked_cases": survived_cases, "bytes_lost": bytes_lost})


@pytest.fixture
def fault_log(request) -> FaultLog:
    log = FaultLog(request.node)
    request.node._fault_log = log
    return log


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    log = getattr(item, "_fault_log", None)
    if log is None or report.when != "call":
        return
    _RECORDS.append({
        "test": item.nodeid, "outcome": report.outcome, "injected": log.injected if not
        report.skipped else 0, "survived": log.injected if report.passed else 0,
        "bytes_lost": sum(d["bytes_lost"] for d in log.details), "details": log.details,
    })


def pytest_sessionfinish(session, exitstatus):
    if not _RECORDS:
        return
    doc = {
        "seed": int(os.environ.get("BIGEARTHNET_FUZZ_SEED", "20261201")),
        "totals": {
            "tests": len(_RECORDS),
            "faults_injected": sum(r["injected"] for r in _RECORDS),
            "faults_survived": sum(r["survived"] for r in _RECORDS),
            "bytes_lost": sum(r["bytes_lost"] for r in _RECORDS),
            "failed_tests": [r["test"] for r in _RECORDS if r["outcome"] == "failed"],
        },
        "records": _RECORDS,
    }
    targets = [session.config._tmp_path_factory.getbasetemp() / "faults_summary.json"]
    if os.environ.get("BIGEARTHNET_FAULTS_SUMMARY"):
        targets.append(Path(os.environ["BIGEARTHNET_FAULTS_SUMMARY"]))
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
