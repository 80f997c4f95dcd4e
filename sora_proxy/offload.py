"""CPU-bound work kept off gevent's event loop.

Under gevent workers (``SORA_PROXY_WORKER_CLASS=gevent``) every request of a worker process
shares one OS thread, so a call that computes for a third of a second (decoding and resizing a
large reference image, making a thumbnail, hashing a whole archived video) would stall every
other request of that worker, downloads included, for as long. :func:`cpu_bound` runs such a
call in a real OS thread of gevent's native thread pool instead, and the calling greenlet
waits while the loop keeps serving the others. Pillow, PyAV, hashlib and zlib release the GIL
while they compute, so the loop really does run meanwhile; a call that holds the GIL
throughout (one huge ``binascii`` call) should be split into pieces, between which the
interpreter hands the GIL back to the loop (see :mod:`sora_proxy.inline`).

Without gevent's monkey-patching (gthread workers, the dev server, a host app) the call is
made directly: each request already has its own thread.

The callable runs in another thread, so it must not touch gevent-patched locks, sockets or
queues shared with greenlets (no logging, no store, no network): bytes and files in, bytes
out. Limits on how many run at once (:data:`sora_proxy.imagework.GATE`) are taken by the
caller, in its greenlet, before handing the work over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def gevent_patched() -> bool:
    """True when gevent has monkey-patched this process's threading (a gevent worker)."""
    # Never imports gevent: it is an optional extra, and loaded only where it patched.
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def cpu_bound(job: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``job(*args, **kwargs)``: in gevent's native thread pool when the process is
    monkey-patched by gevent, else right here. Its result is returned and its exception
    raised in the caller, either way."""
    if not gevent_patched():
        return job(*args, **kwargs)
    import gevent  # type: ignore[import-untyped]  # an optional extra, without type hints

    # A call from inside the pool's own threads (nested) runs at once: gevent checks that.
    result: T = gevent.get_hub().threadpool.apply(job, args, kwargs)
    return result
