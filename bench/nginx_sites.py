"""The two nginx instances of the benchmark: the fast upstream's front and the plain proxy.

``tests/nginx.py`` runs the *shipped* site in front of gunicorn; here nginx plays two other
parts, so this module writes its own minimal configurations (everything under one directory,
``daemon off``, as root ``user root`` so workers can read the temporary directory).

The upstream front answers what a proxy must relay as fast as a server can, so the upstream is
never what limits a figure:

* ``GET /v1/videos/{id}``: a canned, completed Video object echoing ``{id}``;
* ``GET /v1/videos/{id}/content``: one static 1 GiB MP4-headed file, by ``sendfile``
  (``?variant=thumbnail|spritesheet``: the simulator's small sample images, so a proxy
  archiving the video copies those, not the 1 GiB file thrice);
* ``POST /v1/videos/edits``: relayed unbuffered to :mod:`sink`, which reads the whole body
  before it answers a new Video (nginx's own ``return`` would answer before the body is in);
* everything else (``POST /v1/videos``, create with a reference image): the repo's simulator,
  which checks bodies as strictly as the real upstream (image type, pixel size).
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import sys
from pathlib import Path

from procs import Service, free_port

VIDEO_JSON = (
    '{"id":"%s","object":"video","model":"sora-2","status":"completed","progress":100,'
    '"created_at":1767225600,"completed_at":1767225660,"expires_at":1767229200,'
    '"prompt":"bench","size":"1280x720","seconds":"4","remixed_from_video_id":null,'
    '"error":null}'
)


#: The simulator's sample thumbnail and spritesheet, served for ``?variant=``.
ASSETS = Path(__file__).resolve().parent.parent / "sora_proxy" / "simulator" / "assets"
THUMBNAIL, SPRITESHEET = "thumbnail.webp", "spritesheet.webp"


def nginx_binary() -> str:
    """The nginx executable (Debian puts it in /usr/sbin, which may not be on PATH)."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        raise RuntimeError("nginx is not installed; `make bench` installs nginx-light")
    return found


def _main_config(directory: Path, workers: int, http_body: str, connections: int = 1024) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    # Each connection may hold two descriptors (a client, a proxied connection) and a file.
    return f"""\
{user}
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {max(4096, 3 * connections)};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    default_type application/octet-stream;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    access_log {directory}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
{http_body}
}}
"""


def start_nginx(
    name: str, directory: Path, http_body: str, workers: int, port: int, connections: int = 1024
) -> Service:
    """Write the configuration into ``directory`` (created) and start nginx on ``port``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(_main_config(directory, workers, http_body, connections))
    argv = [
        nginx_binary(),
        "-p",
        str(directory),
        "-c",
        str(config),
        "-e",
        str(directory / "error.log"),
    ]
    return Service(name, argv, port, directory / "nginx.out", stop_signal=signal.SIGQUIT)


def upstream_front(
    directory: Path, simulator_port: int, sink_port: int, large_file: Path, workers: int = 2
) -> Service:
    """The fast upstream: canned retrieve, static content, edits to the sink, the rest to the
    simulator."""
    port = free_port()
    for name in (THUMBNAIL, SPRITESHEET):  # what an archive copy of the video also takes
        shutil.copyfile(ASSETS / name, large_file.parent / name)
    video = VIDEO_JSON.replace('"', '\\"')
    body = f"""\
    upstream simulator {{ server 127.0.0.1:{simulator_port}; keepalive 32; }}
    upstream sink {{ server 127.0.0.1:{sink_port}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        default_type application/json;
        location ~ "^/v1/videos/(?<vid>[A-Za-z0-9_.-]+)$" {{
            if ($request_method = GET) {{
                add_header openai-poll-after-ms 1000;
                return 200 "{video % "$vid"}";
            }}
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location ~ "^/v1/videos/[A-Za-z0-9_.-]+/content$" {{
            root {large_file.parent};
            types {{ image/webp webp; }}
            default_type video/mp4;
            set $variant_file /{large_file.name};
            if ($arg_variant = thumbnail) {{ set $variant_file /{THUMBNAIL}; }}
            if ($arg_variant = spritesheet) {{ set $variant_file /{SPRITESHEET}; }}
            try_files $variant_file =404;
        }}
        location = /v1/videos/edits {{
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            client_body_buffer_size 1m;
        }}
        location / {{
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
"""
    return start_nginx("upstream front (nginx)", directory, body, workers, port)


def plain_proxy(directory: Path, upstream_port: int, workers: int = 2) -> Service:
    """nginx as a plain reverse proxy: no buffering either way, keep-alive to the upstream."""
    port = free_port()
    body = f"""\
    upstream sora_upstream {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://sora_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            # Unbuffered, nginx moves a body through one buffer of this size; the defaults
            # (one memory page) cost it half its throughput on a 1 GiB body.
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            client_body_buffer_size 256k;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
"""
    return start_nginx("nginx proxy_pass", directory, body, workers, port)


def shipped_site(gunicorn: str, port: int, directory: Path, archive_dir: Path) -> str:
    """``config/nginx/sora-proxy.conf`` substituted exactly as ``tests/nginx.py`` does it (its
    ``site_config``). Parameters it has beyond the first three: one naming an archive gets
    ``archive_dir`` (the hand-off's internal location aliases it), one naming streams gets
    0 (no per-caller cap: every slow client of the benchmark is one caller)."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    from nginx import site_config  # tests/nginx.py

    extra: dict[str, object] = {}
    for name, parameter in list(inspect.signature(site_config).parameters.items())[3:]:
        if "archive" in name:
            extra[name] = archive_dir
        elif "stream" in name:
            extra[name] = 0
        elif parameter.default is inspect.Parameter.empty:
            raise RuntimeError(f"tests/nginx.py site_config() has a new parameter {name!r}")
    text: str = site_config(gunicorn, port, directory, **extra)
    return text


def documented_site(
    directory: Path,
    gunicorn_port: int,
    archive_dir: Path,
    *,
    workers: int = 2,
    connections: int = 1024,
) -> Service:
    """The documented deployment's nginx: the shipped site included in an ``http {}`` like
    Debian's ``nginx.conf`` (mime types, sendfile, gzip on), ``workers`` processes of
    ``connections`` connections each."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    site = directory / "site.conf"
    site.write_text(shipped_site(f"127.0.0.1:{gunicorn_port}", port, directory, archive_dir))
    mime = Path("/etc/nginx/mime.types")
    body = f"""\
    {f"include {mime};" if mime.exists() else ""}
    gzip on;
    include {site};
"""
    return start_nginx("nginx (shipped site)", directory, body, workers, port, connections)
