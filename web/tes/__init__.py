"""The GA4GH Task Execution Service 1.1 API, under /ga4gh/tes/v1, over the orchestrator's queue and
quotas: a task is a job of the service its executors' image maps to ([tes] in conf/server.ini).

Runs in the server's main process (web threads), with the portal API's tokens and tenancy
(req.context.portal). Modules: validate (the task in), script (the job's files), views (the task
out), routes (the resources).
"""
