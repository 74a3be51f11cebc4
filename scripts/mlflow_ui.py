"""What a researcher sees of a sweep in the MLflow UI: serves a tracking store with a real `mlflow server` on
loopback, opens the runs table and one trial's pages in headless Chromium (Debian's /usr/bin/chromium through
playwright, nothing downloaded), and saves screenshots.

    python scripts/mlflow_ui.py --tracking-uri sqlite:///$PWD/mlflow.db --experiment raycf-default --out docs/

writes docs/mlflow_runs.png (the runs table, the sweep's children unfolded), docs/mlflow_run.png (a trial's
overview: its description, datasets and params) and docs/mlflow_run_charts.png (its chart sections, the
headline first). tests/test_mlflow_ui.py asserts what these pages show.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_screenshot import CHROMIUM, FLAGS, chromium_missing  # noqa: E402

__all__ = ["chromium_missing", "serve", "look"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(backend_store_uri: str, log: Path, timeout_s: float = 90.0):
    """`mlflow server` on 127.0.0.1 for the store; yields its URL; stopped at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT,
                                # no job runner: its seven huey consumers cost ~28 CPU-s at every start, unused here
                                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def look(url: str, experiment_id: str, run_id: str, out: Path | None = None) -> dict:
    """The text a person reads on the runs table (the parent unfolded), on one run's overview and on its chart
    page, and the chart sections in the order shown; screenshots under `out` when given."""
    from playwright.sync_api import sync_playwright
    errors: list[str] = []
    shown: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
            page.wait_for_selector("[role=gridcell]", timeout=60_000)
            close_assistant(page)
            page.locator("[role=gridcell] button").first.click()  # unfold the sweep's children
            page.wait_for_timeout(800)
            shown["runs"] = page.inner_text("body")
            shot(page, out, "mlflow_runs.png")
            page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}")
            page.wait_for_selector("text=Description", timeout=60_000)
            page.wait_for_timeout(800)
            shown["overview"] = page.inner_text("body")
            shot(page, out, "mlflow_run.png")
            page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
            page.wait_for_selector("text=Add section", timeout=60_000)
            page.wait_for_timeout(1500)
            shown["charts"] = page.inner_text("body")
            shown["sections"] = sections(shown["charts"])
            shot(page, out, "mlflow_run_charts.png")
        finally:
            browser.close()
    return {**shown, "errors": errors}


def close_assistant(page) -> None:
    """The MLflow Assistant side panel covers a third of the page; close it when it is open."""
    button = page.locator("button[aria-label=Close]")
    if button.count():
        with contextlib.suppress(Exception):
            button.first.click(timeout=2000)


def sections(text: str) -> list[tuple[str, int]]:
    """The chart sections in page order: a title line followed by a `(N)` line, N charts."""
    lines = [line.strip() for line in text.splitlines()]
    return [(lines[i - 1], int(line[1:-1])) for i, line in enumerate(lines)
            if i and line.startswith("(") and line.endswith(")") and line[1:-1].isdigit()]


def shot(page, out: Path | None, name: str) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / name))


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from raycf import tracking
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", help="a sqlite store; default: sqlite:///<cwd>/mlflow.db")
    p.add_argument("--out", default="docs")
    args = p.parse_args(argv)
    if why := chromium_missing():
        print(f"error: {why}", file=sys.stderr)
        return 2
    from raycf.errors import ReportError
    from raycf.report.page import check_store
    uri = tracking.resolve_uri(args.tracking_uri)
    try:
        check_store(uri)  # only reads: a sqlite file that is not there is an error, not a new store
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"error: no experiment {args.experiment!r} at {uri}", file=sys.stderr)
        return 2
    kids = [r for r in c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
            if "mlflow.parentRunId" in r.data.tags]
    if not kids:
        print(f"error: experiment {args.experiment!r} has no sweep children", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with serve(uri, out / "mlflow_server.log") as url:
        shown = look(url, exp.experiment_id, kids[0].info.run_id, out)
    (out / "mlflow_server.log").unlink(missing_ok=True)
    print("sections:", ", ".join(f"{name} ({n})" for name, n in shown["sections"]))
    for e in shown["errors"]:
        print(f"page error: {e}", file=sys.stderr)
    print(f"wrote {out}/mlflow_runs.png, mlflow_run.png, mlflow_run_charts.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
