"""gunicorn settings for sora_proxy: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

gthread workers: each request gets a thread, so a download that streams for minutes holds one
thread, not a whole worker, and the worker's heartbeat keeps running meanwhile (so ``timeout``
never kills a long stream). Override with SORA_PROXY_BIND, WEB_CONCURRENCY, SORA_PROXY_THREADS.
"""

import os

bind = os.environ.get("SORA_PROXY_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Mostly idle threads waiting on the upstream; keep SORA_PROXY_POOL_MAXSIZE >= threads.
threads = int(os.environ.get("SORA_PROXY_THREADS", "16"))
# Heartbeat timeout for a stuck worker; gthread workers heartbeat while requests stream.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Build the app once in the master so a bad setting stops start-up before any worker forks;
# the upstream Session is made lazily in each worker (sora_proxy.upstream.UpstreamClient).
preload_app = True
# The proxy writes its own JSON line per request (request id, caller, upstream, bytes) to
# stderr; gunicorn's own access log would repeat it, so it is off unless asked for.
accesslog = os.environ.get("SORA_PROXY_ACCESS_LOG") or None
# The default access log format prints the request line, query string included: a signed
# content URL's token would be written there, so leave it off where such URLs are used (the
# proxy's own JSON line logs the path alone). The Authorization header is never part of it.
errorlog = "-"
# Let a streaming response run to its end on SIGTERM before the worker exits.
loglevel = os.environ.get("SORA_PROXY_LOG_LEVEL", "info")
# gunicorn >= 25 opens a control socket at one fixed path per user; several proxies (or a
# proxy and a test run) on one host would take it from each other. Older versions ignore this.
control_socket_disable = True


# Prometheus multiprocess mode: every worker writes its samples to one directory, which must
# exist (and be empty) before the app, and so prometheus_client, is loaded.
if os.environ.get("SORA_PROXY_METRICS", "").strip().lower() in ("1", "true", "yes", "on"):
    import shutil
    import tempfile

    _metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="sora-proxy-metrics-"
    )
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

    def child_exit(server, worker):
        """Drop a dead worker's live gauges (counters keep its samples)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Start the proxy's tracker in each worker as soon as it is up, so unfinished videos are
    followed even before (or without) a request reaching that worker."""
    from sora_proxy.tracker import start_registered

    start_registered()
