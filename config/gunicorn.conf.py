"""gunicorn settings for sora_proxy: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

Two kinds of worker, chosen by ``SORA_PROXY_WORKER_CLASS``:

``gthread`` (the default)
    Each request gets a thread, so a download that streams for minutes holds one thread, not a
    whole worker, and the worker's heartbeat keeps running meanwhile (so ``timeout`` never
    kills a long stream). A worker serves ``SORA_PROXY_THREADS`` (16) requests at once: without
    nginx in front, that many slow clients (downloads read at a trickle, uploads sent at one)
    fill it. Behind ``config/nginx/sora-proxy.conf`` this is the setting to use.

``gevent``
    Each request is a greenlet: a worker serves up to ``SORA_PROXY_WORKER_CONNECTIONS`` (1000)
    connections at once, and one that waits (a slow reader, a slow upload, the upstream) costs
    a few kilobytes, not a thread. For serving without nginx, or many long downloads. Needs the
    ``gevent`` extra (``pip install 'sora-proxy[gevent]'``). This file monkey-patches the
    standard library before anything else is imported (gunicorn runs it in the master, before
    ``preload_app`` imports the app), so the app, requests, urllib3, redis and the tracker's
    threads are all cooperative and gevent has nothing to warn about. CPU-bound work (reference
    images, thumbnails, hashing whole files) runs in gevent's native thread pool
    (:mod:`sora_proxy.offload`), so it does not stall the worker's other requests.

    Every open connection is a file descriptor, two while it is relayed (the client's and the
    upstream's). Each worker process needs about ``2 x SORA_PROXY_WORKER_CONNECTIONS + 256``
    (2256 for the default); this file raises the soft limit (``ulimit -n``) up to that within
    the hard limit, and prints a warning when the hard limit is lower. Raise the hard limit
    where the service is started: ``LimitNOFILE=65536`` in a systemd unit, ``docker run
    --ulimit nofile=65536``, or ``ulimit -Hn`` in its shell.

Other knobs: SORA_PROXY_BIND, WEB_CONCURRENCY (workers), SORA_PROXY_LOG_LEVEL,
SORA_PROXY_ACCESS_LOG, SORA_PROXY_METRICS. A bad value stops start-up with one line.
"""

import os
import sys


def _refuse(name, message):
    """Stop start-up with one line naming the setting (SystemExit is not reported by
    gunicorn as a broken config file, so no traceback follows)."""
    print(f"sora-proxy: configuration error: {name}: {message}", file=sys.stderr)
    raise SystemExit(2)


_WORKER_CLASSES = ("gthread", "gevent")
worker_class = os.environ.get("SORA_PROXY_WORKER_CLASS", "").strip().lower() or "gthread"
if worker_class not in _WORKER_CLASSES:
    _refuse("SORA_PROXY_WORKER_CLASS", f"must be one of {', '.join(_WORKER_CLASSES)}")

if worker_class == "gevent":
    # Before the app (preloaded in this master process) imports ssl, requests, urllib3, redis
    # or threading: patched later, as gunicorn's gevent worker would do after the fork, they
    # keep blocking primitives made at import and gevent warns about ssl.
    try:
        from gevent import monkey
    except ImportError:
        _refuse("SORA_PROXY_WORKER_CLASS", "gevent is not installed (the 'gevent' extra)")
    monkey.patch_all()


def _whole(name, default):
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        _refuse(name, "must be a whole number")
    return int(text)


def _allow_open_files(needed):
    """Raise this process's soft open-files limit to ``needed`` (workers inherit it) as far
    as the hard limit allows; say so in one line if that is not far enough."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(
            f"sora-proxy: warning: SORA_PROXY_WORKER_CONNECTIONS={worker_connections} needs "
            f"about {needed} open files per worker, but the hard limit (ulimit -Hn) is "
            f"{hard}: connections beyond it wait unaccepted; raise it (systemd LimitNOFILE=)",
            file=sys.stderr,
        )


bind = os.environ.get("SORA_PROXY_BIND", "127.0.0.1:8000")
workers = _whole("WEB_CONCURRENCY", 2)
if worker_class == "gthread":
    # Mostly idle threads waiting on the upstream; keep SORA_PROXY_POOL_MAXSIZE >= threads.
    threads = _whole("SORA_PROXY_THREADS", 16)
else:
    worker_connections = _whole("SORA_PROXY_WORKER_CONNECTIONS", 1000)
    # Two descriptors per relayed connection, plus the listener, pooled upstream
    # connections, the store, logs and the archive's files.
    _allow_open_files(2 * worker_connections + 256)
# Heartbeat timeout for a stuck worker. Both worker kinds heartbeat while requests stream
# (gthread from its main thread, gevent from its loop, which CPU-bound work does not block).
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
