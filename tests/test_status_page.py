"""The status page in a real browser (Debian's `chromium --headless`) against a real server and
executor: it shows each service's queue and outcomes, the executor alive, a failure's reason and
the throughput chart, with nothing fetched from another host. `make status-screenshot` (or
STATUS_SCREENSHOT=path) keeps the screenshot the README shows.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness import needs, submit, wait_for_outcome

BROWSER = shutil.which("chromium") or "chromium"


def browse(url: str, *options: str) -> subprocess.CompletedProcess:
    """Run the headless browser on `url` (as root it needs --no-sandbox; these machines have no
    D-Bus, which it only complains about)."""
    return subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,900", *options, url], capture_output=True, timeout=90)


@needs("chromium", "a real browser for the status page")
def test_the_status_page_shows_the_services_the_executor_the_failures_and_the_chart_in_a_real_browser(
        cluster, tmp_path):
    executor = cluster.executor("example", slots=2)
    server = cluster.server({"example": {"clients": executor.url}})
    done = [submit(server, "echo ok > out.txt", user_id=user) for user in (1, 2, 3)]
    failed = submit(server, "echo 'no such input' >&2; exit 3", user_id=4)
    for job_id in done:
        assert wait_for_outcome(server, job_id) == 200
    assert wait_for_outcome(server, failed) == 204
    submit(server, "sleep 300", user_id=5)  # one job active on the page

    dom = browse(f"{server.url}/status", "--dump-dom")
    page = dom.stdout.decode()
    assert dom.returncode == 0 and "<table id=\"services\"" in page, dom.stderr.decode()[-2000:]
    services = page.split('id="services"')[1].split("</table>")[0]
    assert "<td>example</td>" in services and "<td class=\"n\">3</td>" in services  # 3 completed
    executors = page.split('id="executors"')[1].split("</table>")[0]
    assert executor.url in executors and ">alive<" in executors
    failures = page.split('id="failures"')[1].split("</table>")[0]
    assert "no such input" in failures and '<td class="n">3</td>' in failures  # its stderr and exit code
    assert page.count("<rect") >= 2  # the last hour's bars: completed and failed
    assert "https://" not in page and "http://" not in page.replace(executor.url, "")

    shot = Path(os.environ.get("STATUS_SCREENSHOT") or tmp_path / "status.png")
    taken = browse(f"{server.url}/status", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr.decode()[-2000:]
