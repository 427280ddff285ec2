"""Every statistical test, calibrated: false positives <= 0.10 at nominal 0.05 without the effect, power >= 0.8
with it, 95% intervals covering >= their limit (trajlab.analysis.calibration_cases; scripts/calibrate.py runs
the same cases with more replicates into docs/calibration.md)."""

from __future__ import annotations

import pytest

from trajlab.analysis.calibration_cases import CASES, passes, run_case


@pytest.mark.parametrize("case", [c for c in CASES if c.test_reps > 0], ids=lambda c: c.name)
def test_case_meets_its_limit(case):
    rate = run_case(case, case.test_reps, seed=0)
    assert passes(case, rate), f"{case.name}: {case.kind} rate {rate:.3f} vs limit {case.limit} ({case.data})"


def test_reference_cases_show_what_the_old_statistics_got_wrong():
    """The texts-only bootstrap orders same-distribution runs far above 5%; the new test does not."""
    by = {c.name: c for c in CASES}
    assert run_case(by["order-texts-only-4v4"], 40) > 0.10 >= run_case(by["order-same-4v4"], 40)
