"""HEALTHCHECK: 0 when the node's GET /health answers 200 (the URL and secret the entrypoint wrote)."""
import sys
import urllib.request

try:
    with open("/tmp/orchestrator-health-url", encoding="utf-8") as f:
        url, _, secret = f.read().strip().partition("\n")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret.strip()}"} if secret.strip() else {})
    with urllib.request.urlopen(request, timeout=4) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(exc)
    sys.exit(1)
