"""Agreement of the ``math_answer`` verifier with constructed MATH-500 answer forms.

    .venv/bin/python benchmarks/answer_forms.py

Builds the cases of ``tests/test_answer_forms.py`` (equivalent rewrites of real MATH-500
answers, written the way models write final answers, and near misses of them) and prints, by
form, how many the verifier decides as expected: equivalents accepted, near misses
rejected. Reads ``/work/shared/data/math500/test.jsonl``. ``--show`` lists the disagreements.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_answer_forms import build_cases, math500_rows, run_case  # noqa: E402

from distillery.verify.math_answer import MathAnswerConfig, MathAnswerVerifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show", action="store_true", help="print every case the verifier gets wrong")
    args = parser.parse_args()
    cases = build_cases(math500_rows())
    verifier = MathAnswerVerifier(MathAnswerConfig(reference="answer"))
    table: dict[str, list[int]] = {}
    for case in cases:
        ok = run_case(verifier, case) == case.expected
        row = table.setdefault(case.form, [0, 0, 0, 0])  # equivalents ok, equivalents, misses ok, misses
        if case.expected:
            row[0] += ok
            row[1] += 1
        else:
            row[2] += ok
            row[3] += 1
        if not ok and args.show:
            print(
                f"  [{case.form} / {case.kind}] expected {case.expected}: ref {case.reference!r} <- {case.response!r}"
            )
    print("| form | equivalents verified | near misses rejected | agreement |\n|---|---|---|---|")
    total = [0, 0, 0, 0]
    for form, row in table.items():
        total = [t + r for t, r in zip(total, row, strict=True)]
        agree = (row[0] + row[2]) / (row[1] + row[3])
        print(f"| {form} | {row[0]}/{row[1]} | {row[2]}/{row[3]} | {agree:.1%} |")
    agree = (total[0] + total[2]) / (total[1] + total[3])
    print(f"| **all** | {total[0]}/{total[1]} | {total[2]}/{total[3]} | {agree:.1%} |")


if __name__ == "__main__":
    main()
