"""The standalone proxy as gunicorn loads it: ``gunicorn -c config/gunicorn.conf.py
sora_proxy.wsgi_entry:app`` (``sora-proxy serve`` and the repository's ``wsgi.py`` use it).

A bad ``SORA_PROXY_*`` setting ends start-up with one line naming the key and exit status 2,
not a traceback.
"""

from __future__ import annotations

import os

from . import create_app
from .preflight import app_or_exit

app = app_or_exit(create_app, os.environ)
