"""An existing Flask app with its own pages and login, hosting the video API at ``/ai``.

Its users are the proxy's callers: whoever is logged in owns the videos they create, and
sees only those. The upstream key stays on the server; the browser only holds its session.

Run it from the repository root (``.venv/bin/sora-proxy simulator`` in another terminal
serves a local upstream at http://127.0.0.1:8001/v1 for trying it with no account)::

    SORA_PROXY_UPSTREAM_URL=http://127.0.0.1:8001/v1 SORA_PROXY_UPSTREAM_API_KEY=sk-... \\
    FLASK_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))') \\
    .venv/bin/gunicorn -c config/gunicorn.conf.py 'examples.host_app:gunicorn_app()'

then log in at ``/login`` (ann / wonderland) and ``POST /ai/v1/videos`` with the session
cookie. With ``FLASK_SECRET_KEY`` unset each worker makes its own random key, so a session
only works on the worker that made it: set it for more than one worker.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, redirect, render_template_string, request, session, url_for
from markupsafe import escape
from werkzeug.security import check_password_hash, generate_password_hash

from sora_proxy import SoraProxy
from sora_proxy.preflight import app_or_exit
from sora_proxy.settings import environment_config

# A stand-in for the host's real user database.
USERS = {"ann": "wonderland", "ben": "builder"}

PAGE = """<!doctype html>
<title>Kite Studio</title>
<h1>Kite Studio</h1>
{% if user %}<p>Logged in as {{ user }}. <a href="{{ url_for('logout') }}">Log out</a></p>
{% else %}<p><a href="{{ url_for('login') }}">Log in</a> to make videos.</p>{% endif %}
{% if error %}<p role="alert">{{ error }}</p>{% endif %}
{% if form %}<form method="post">
  <label>User <input name="username" autocomplete="username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button>Log in</button>
</form>{% endif %}
"""


def current_user(_request: Request) -> str | None:
    """The proxy's ``authenticate`` callback: the logged-in user, or ``None`` (a 401)."""
    return session.get("user")


def create_host_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The host app. Settings: ``FLASK_*`` and ``SORA_PROXY_*`` variables, then ``config``."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_hex(32),
        # The session authenticates paid API calls: a cross-site form must not carry it.
        SESSION_COOKIE_SAMESITE="Lax",
        SORA_PROXY_URL_PREFIX="/ai",
    )
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY and friends
    app.config.update(environment_config())
    app.config.update(config or {})
    passwords = {name: generate_password_hash(password) for name, password in USERS.items()}

    @app.get("/")
    def home() -> str:
        return render_template_string(PAGE, user=session.get("user"))

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "GET":
            return render_template_string(PAGE, form=True)
        name = request.form.get("username", "")
        hashed = passwords.get(name)
        if hashed is None or not check_password_hash(hashed, request.form.get("password", "")):
            return render_template_string(PAGE, form=True, error="Wrong user or password."), 401
        session.clear()
        session["user"] = name
        return redirect(url_for("home"))

    @app.route("/logout", methods=["GET", "POST"])
    def logout() -> Any:
        session.clear()
        return redirect(url_for("home"))

    @app.get("/me")
    def me() -> Any:
        if "user" not in session:
            return {"error": "Log in first."}, 401
        return {"user": session["user"]}

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        return f"<!doctype html><h1>Not found</h1><p>No page at {escape(request.path)}.</p>", 404

    SoraProxy(app, authenticate=current_user)
    return app


def gunicorn_app() -> Flask:
    """The host app as gunicorn loads it: a bad setting is one line and exit status 2."""
    return app_or_exit(create_host_app, os.environ)


if __name__ == "__main__":
    gunicorn_app().run(debug=True)
