"""Who may call what: portal tokens on the public API, the cluster secret between server and executors.

Both are bearer tokens (`Authorization: Bearer <secret>`), compared in constant time against every
configured secret. A portal that presented its token is known by name in `req.context.portal`; it
sees only the jobs it submitted (any other job is "not found", exactly as if it did not exist).
Operators hold a token of `[operators]`; with no token configured at all, every caller on loopback
is one. An operator sees every job, and the views of the whole server (the executors, the metrics)
are theirs alone; the cluster secret opens those views too (not the jobs: it is no portal's or
operator's token), and it alone shows the actor processes. `metrics_public` opens /metrics to anyone
(a Prometheus without a token).
"""
from __future__ import annotations

import base64
import hmac
import ipaddress

import falcon

from storage.jobs import EVERY_PORTAL

#: Open to anyone: liveness, and the API's own documentation (it holds no data).
PUBLIC = {("GET", "/"), ("HEAD", "/"), ("GET", "/health"), ("GET", "/api-docs/openapi.json")}
PUBLIC_PREFIXES = ("/swagger-ui",)
INTERNAL_PREFIX = "/internal/"
#: Views of every portal's work and of the cluster: for operators only.
OPERATOR = {("GET", "/executors"), ("GET", "/metrics"), ("GET", "/status")}
METRICS = ("GET", "/metrics")
#: Pages a browser opens: their 401 also offers HTTP Basic, so that the browser asks for the secret.
BROWSER_PAGES = {("GET", "/status")}


def bearer(req: falcon.Request) -> str | None:
    """The secret the caller presents: a bearer token, or the password of HTTP Basic (what a
    browser sends; the user name is not read)."""
    header = req.get_header("Authorization") or ""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() == "basic" and token:
        try:
            token = base64.b64decode(token, validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
        return token or None
    return token if scheme.lower() == "bearer" and token else None


def matching(token: str | None, secrets: tuple[tuple[str, str], ...]) -> str | None:
    """The name whose secret equals `token`; every secret is compared, so timing tells nothing."""
    found = None
    offered = (token or "").encode()
    for name, secret in secrets:
        if hmac.compare_digest(offered, secret.encode()) and token:
            found = name
    return found


def unauthorized(description: str, req: falcon.Request | None = None) -> falcon.HTTPUnauthorized:
    browser = req is not None and (req.method, req.path) in BROWSER_PAGES
    return falcon.HTTPUnauthorized(title="Unauthorized", description=description,
                                   challenges=["Bearer", 'Basic realm="orchestrator"'] if browser else ["Bearer"])


class ServerAuth:
    """Falcon middleware of the server.

    Sets `req.context.portal` (the calling portal's name; None without tokens; EVERY_PORTAL for an
    operator) and `req.context.cluster`: the caller holds the cluster secret (an executor, or an
    operator), or the server has nothing to authenticate with (no tokens and no secret: loopback only).
    """

    def __init__(self, tokens: tuple[tuple[str, str], ...], cluster_secret: str,
                 operators: tuple[tuple[str, str], ...] = (), metrics_public: bool = False):
        self.tokens = tokens
        self.cluster = (("cluster", cluster_secret),) if cluster_secret else ()
        self.operators = operators
        self.open = not tokens and not cluster_secret
        self.loopback_operators = not tokens and not operators
        self.metrics_public = metrics_public

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.portal = None
        req.context.cluster = self.open or matching(bearer(req), self.cluster) is not None
        if (req.method, req.path) in PUBLIC or req.path.startswith(PUBLIC_PREFIXES):
            return
        if req.path.startswith(INTERNAL_PREFIX):
            # NOTE: with portal tokens and no secret (a configuration the loader refuses) nobody passes.
            if not req.context.cluster:
                raise unauthorized("executor calls need the cluster secret as a bearer token.")
            return
        if self.metrics_public and (req.method, req.path) == METRICS:
            return
        operator = self.is_operator(req)
        if (req.method, req.path) in OPERATOR:
            if operator or matching(bearer(req), self.cluster) is not None:
                return
            if matching(bearer(req), self.tokens) is not None:
                raise falcon.HTTPForbidden(title="Operators only", description=(
                    f"{req.method} {req.path} is an operator view of every portal's work; a portal token does not "
                    f"open it. Operators send their token of [operators] as a bearer token."))
            raise unauthorized(f"{req.method} {req.path} is an operator view: send an operator's token as a bearer "
                               f"token (or, from a browser, as the password).", req)
        if not self.tokens:
            return
        if operator:
            if req.method == "POST" and req.path == "/upload":
                raise falcon.HTTPForbidden(title="Portals only", description=(
                    "operators do not submit jobs: a job belongs to a portal; send the portal's token."))
            req.context.portal = EVERY_PORTAL
            return
        req.context.portal = matching(bearer(req), self.tokens)
        if req.context.portal is None:
            raise unauthorized("send your portal's token as `Authorization: Bearer <token>`.")

    def is_operator(self, req: falcon.Request) -> bool:
        """An operator's token, or any caller on loopback when no token is configured at all."""
        if matching(bearer(req), self.operators) is not None:
            return True
        return self.loopback_operators and _loopback(req.remote_addr)


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


class ExecutorAuth:
    """Falcon middleware of an executor node: everything but `GET /` (and `GET /metrics` when
    `metrics_public`) needs the cluster secret."""

    def __init__(self, cluster_secret: str, metrics_public: bool = False):
        self.cluster = (("cluster", cluster_secret),) if cluster_secret else ()
        self.open = {("GET", "/"), ("HEAD", "/")} | ({METRICS} if metrics_public else set())

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.cluster or (req.method, req.path) in self.open:
            return
        if matching(bearer(req), self.cluster) is None:
            raise unauthorized("this executor only answers its server: send the cluster secret as a bearer token.")
