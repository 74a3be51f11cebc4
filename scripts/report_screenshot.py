"""Screenshot of a sweep's report for the README (docs/report.png), rendered by headless Chromium.

    python scripts/report_screenshot.py --experiment raycf-default --tracking-uri sqlite:///$PWD/mlflow.db

Builds the report with raycf.report, opens it in Debian's /usr/bin/chromium (`apt-get install chromium`)
through playwright (`pip install -e .[test]`; never `playwright install`: nothing is downloaded) and saves
the first screen (or the whole page with --full-page). Prints the page's console errors, if any.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from raycf.errors import ReportError
from raycf.report import page as report_page

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# As root in a container: no sandbox; nothing may reach the network (no updates, sync or QUIC probes).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_missing() -> str | None:
    """Why a render cannot run here, or None when it can."""
    if not shutil.which(CHROMIUM):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e .[test])"
    return None


def render(page_path: Path, png: Path, *, width: int = 1600, height: int = 1000, full_page: bool = False) -> dict:
    """Open the page offline, wait for it to load, save a screenshot. Returns what the page showed:
    console errors and page errors, the number of tables, and each image's natural width (0 = broken)."""
    from playwright.sync_api import sync_playwright
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("http*://**", lambda route: route.abort())  # offline: any request would be an error
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
            shown = page.evaluate("""() => ({
                tables: document.querySelectorAll('table').length,
                rows: document.querySelectorAll('table tbody tr').length,
                images: [...document.images].map(i => i.complete ? i.naturalWidth : 0)})""")
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=full_page)
        finally:
            browser.close()
    return {**shown, "errors": errors}


def main(argv=None) -> int:
    from raycf import tracking
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    p.add_argument("--png", default=str(ROOT / "docs" / "report.png"))
    p.add_argument("--full-page", action="store_true")
    args = p.parse_args(argv)
    if why := chromium_missing():
        print(f"error: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        try:
            page = report_page.build(tracking.resolve_uri(args.tracking_uri), args.experiment, Path(d))
        except (ReportError, ConnectionError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        shown = render(page, Path(args.png), full_page=args.full_page)
    for e in shown["errors"]:
        print(f"console error: {e}", file=sys.stderr)
    print(f"{args.png}: {shown['tables']} tables, {len(shown['images'])} images")
    return 1 if shown["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
