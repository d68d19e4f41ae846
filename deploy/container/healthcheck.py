"""The image's HEALTHCHECK, run in the container: exit 0 when the node's GET /health answers 200.

The URL and the secret (an executor's /health asks for the cluster secret) are those entrypoint.py
wrote for the node it started."""
import sys
import urllib.request

try:
    with open("/tmp/orchestrator-health", encoding="utf-8") as file:
        url, secret = (file.read().split("\n") + ["", ""])[:2]
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=4) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", with its reason in the check's log
    print(exc)
    sys.exit(1)
