"""WSGI entry point: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

A bad ``SORA_PROXY_*`` setting ends start-up with one line naming the key (exit status 2),
not a traceback: see :mod:`sora_proxy.wsgi_entry`.
"""

from sora_proxy.wsgi_entry import app

__all__ = ["app"]
