"""The study's report of a sweep, read from MLflow only (see raycf.report).

    python -m raycf.report --experiment raycf-default [--tracking-uri URI] [--out DIR] [--group-by PARAM]
"""
import logging
import sys
from pathlib import Path

from raycf import tracking
from raycf.errors import cli, parser
from raycf.report.page import build


def report(args) -> int:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # store-opening chatter on stderr
    uri = tracking.resolve_uri(args.tracking_uri)
    page = build(uri, args.experiment, Path(args.out or f"report-{args.experiment}"), args.group_by, args.sweep)
    print(f"report: {page}  (tables: {page.parent / 'table.csv'}, {page.parent / 'table.md'})")
    return 0


def main(argv=None) -> int:
    p = parser("raycf.report", "the study's tables and figures of a sweep, read from MLflow (report.html, "
                               "table.csv, table.md)")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    p.add_argument("--out", help="output folder (default: report-<experiment>)")
    p.add_argument("--group-by", metavar="PARAM", help="one table row per value of this param, e.g. warm_start.kind")
    p.add_argument("--sweep", help="the sweep (parent run name) to report; default: the latest")
    return cli(p, report, argv)


if __name__ == "__main__":
    sys.exit(main())
