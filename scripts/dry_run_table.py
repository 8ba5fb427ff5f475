"""Merge the ``--json`` outputs of several ``harness run --dry-run`` invocations (same GPU, efficiency and profile)
into one Markdown cost table (``leaderboards/paper-costs.md``).

    .venv/bin/python scripts/dry_run_table.py part-1.json part-2.json ... > table.md
"""
from __future__ import annotations

import json
import sys

from harness.dryrun import markdown, report_from_dict


def main(paths: list[str]) -> int:
    reports = [report_from_dict(json.loads(open(p, encoding="utf-8").read())) for p in paths]
    first = reports[0]
    for r in reports[1:]:
        if (r.gpu, r.efficiency, r.op_seconds, r.profile, r.precision, r.max_units) != \
                (first.gpu, first.efficiency, first.op_seconds, first.profile, first.precision, first.max_units):
            print("error: the dry runs differ in GPU, efficiency, time per operator call (or one predates the "
                  "count), profile, precision or units", file=sys.stderr)
            return 2
        first.cells += r.cells
        first.seconds += r.seconds
    sys.stdout.write(markdown(first))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
