"""WSGI entry point: ``gunicorn -c config/gunicorn.conf.py wsgi:app``.

A bad ``SORA_PROXY_*`` setting ends start-up with one line naming the key, not a traceback.
"""

import sys

from sora_proxy import ConfigError, create_app

try:
    app = create_app()
except ConfigError as error:
    print(f"sora-proxy: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
