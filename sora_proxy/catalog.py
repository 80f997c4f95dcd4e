"""The upstreams the proxy may use: where they are, which models they offer, in what order.

One upstream comes from ``SORA_PROXY_UPSTREAM_URL`` (+ ``_API_KEY``); several from the TOML
file named by ``SORA_PROXY_UPSTREAMS_FILE`` (stdlib ``tomllib``). Each has a name, a base URL,
a key, extra query parameters (``api-version``), its models (the caller's ``sora-2`` may be the
upstream's deployment ``my-sora-deploy``, with its own sizes and seconds), timeouts, a priority
and weight for choosing among upstreams that offer the same model, and a dialect
(:mod:`sora_proxy.dialects`) that knows how to speak to it.
"""

from __future__ import annotations

import os
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .dialects import DIALECTS, Dialect, Fail, OpenAIDialect
from .errors import ConfigError, InvalidRequest
from .settings import Settings
from .sizing import (
    ALLOWED_SECONDS,
    MODEL_SIZES,
    OFFERED_MODELS,
    ModelRoute,
    model_family,
)

FILE_KEY = "SORA_PROXY_UPSTREAMS_FILE"
_UPSTREAM_KEYS = {
    "name",
    "base_url",
    "dialect",
    "api_key",
    "api_key_env",
    "query",
    "models",
    "connect_timeout",
    "read_timeout",
    "priority",
    "weight",
}
_MODEL_KEYS = {"deployment", "sizes", "seconds"}


@dataclass(frozen=True)
class Upstream:
    """One upstream: where it is, its key (never in ``repr``), its models, and the dialect
    that knows how to speak to it."""

    name: str
    base_url: str
    connect_timeout: float
    read_timeout: float
    dialect: Dialect = field(default_factory=OpenAIDialect)
    api_key: str | None = field(default=None, repr=False)
    query: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, ModelRoute] = field(default_factory=dict)
    priority: int = 0
    weight: float = 1.0


class Catalog:
    """Every upstream by name, and which offer each model."""

    def __init__(self, upstreams: list[Upstream], default_model: str | None = None) -> None:
        self.upstreams: dict[str, Upstream] = {upstream.name: upstream for upstream in upstreams}
        offered = self.models
        #: What a create that names no model gets: the setting, else the first model offered.
        self.default_model = default_model or next(iter(offered))
        if self.default_model not in offered:
            raise ConfigError(
                "SORA_PROXY_DEFAULT_MODEL",
                f"'{self.default_model}' is offered by no upstream; use one of "
                f"{', '.join(sorted(offered))}",
            )

    @property
    def models(self) -> dict[str, ModelRoute]:
        """Each offered model with the union of its sizes and seconds over all upstreams."""
        merged: dict[str, ModelRoute] = {}
        for upstream in self.upstreams.values():
            for name, route in upstream.models.items():
                known = merged.get(name)
                sizes = _union(known.sizes if known else (), route.sizes)
                seconds = _union(known.seconds if known else (), route.seconds)
                merged[name] = ModelRoute(name, name, sizes, seconds)
        return merged

    def default_upstream(self) -> Upstream:
        """Where a job that names no model goes (uploaded edits, characters; the list without a
        store): the first choice for the default model."""
        return self.candidates(self.default_model, None, None)[0]

    def candidates(self, model: str, size: str | None, seconds: str | None) -> list[Upstream]:
        """The upstreams to try for a create, in order: lowest priority first, then a
        weighted shuffle within a priority.

        :raises InvalidRequest: no upstream offers ``model`` with that size and seconds.
        """
        offering = [u for u in self.upstreams.values() if model in u.models]
        if not offering:
            raise InvalidRequest(
                f"Invalid 'model': must be one of {', '.join(sorted(self.models))}.",
                param="model",
            )
        fitting = [
            u
            for u in offering
            if (size is None or size in u.models[model].sizes)
            and (seconds is None or seconds in u.models[model].seconds)
        ]
        if not fitting:
            route = self.models[model]
            param = "size" if size is not None and size not in route.sizes else "seconds"
            allowed = route.sizes if param == "size" else route.seconds
            raise InvalidRequest(
                f"{param} '{size if param == 'size' else seconds}' is not available for model "
                f"'{model}'; use one of {', '.join(allowed)}.",
                param=param,
            )
        ordered: list[Upstream] = []
        for priority in sorted({u.priority for u in fitting}):
            group = [u for u in fitting if u.priority == priority]
            while group:
                pick = random.choices(group, weights=[u.weight for u in group])[0]  # noqa: S311
                ordered.append(pick)
                group.remove(pick)
        return ordered


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _default_route(name: str, deployment: str | None = None) -> ModelRoute:
    family = MODEL_SIZES.get(model_family(name))
    return ModelRoute(name, deployment or name, family or (), ALLOWED_SECONDS)


def load_catalog(settings: Settings) -> Catalog:
    """The catalog the settings describe: the upstreams file, else the single upstream.

    :raises ConfigError: one line naming the key (and the upstream) at fault.
    """
    if settings.upstreams_file is None:
        assert settings.upstream_url is not None  # load_settings requires one or the other
        models = {name: _default_route(name) for name in OFFERED_MODELS}
        return Catalog(
            [
                Upstream(
                    "default",
                    settings.upstream_url,
                    api_key=settings.upstream_api_key,
                    models=models,
                    connect_timeout=settings.connect_timeout,
                    read_timeout=settings.read_timeout,
                )
            ],
            settings.default_model,
        )
    try:
        with open(settings.upstreams_file, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(FILE_KEY, f"cannot be read ({error.strerror or 'error'})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(FILE_KEY, f"is not valid TOML ({error})") from None
    entries = document.get("upstream")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(FILE_KEY, "needs at least one [[upstream]] table")
    upstreams = [_parse_upstream(entry, index, settings) for index, entry in enumerate(entries)]
    names = [upstream.name for upstream in upstreams]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(FILE_KEY, f"upstream name '{name}' is used twice")
    return Catalog(upstreams, settings.default_model)


def _parse_upstream(entry: Any, index: int, settings: Settings) -> Upstream:
    if not isinstance(entry, dict):
        raise ConfigError(FILE_KEY, f"upstream #{index + 1} must be a table")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(FILE_KEY, f"upstream #{index + 1} needs a name")

    def fail(problem: str) -> ConfigError:
        return ConfigError(FILE_KEY, f"upstream '{name}': {problem}")

    dialect_name = entry.get("dialect", OpenAIDialect.name)
    dialect_class = DIALECTS.get(dialect_name) if isinstance(dialect_name, str) else None
    if dialect_class is None:
        raise fail(f"dialect must be one of {', '.join(sorted(DIALECTS))}, not {dialect_name!r}")
    unknown = set(entry) - _UPSTREAM_KEYS - dialect_class.config_keys
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}")
    base_url = entry.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise fail("base_url must be an http(s) URL")
    dialect = dialect_class.from_config(entry, fail)
    query = entry.get("query", {})
    if not isinstance(query, dict) or not all(isinstance(v, str) for v in query.values()):
        raise fail("query must be a table of strings")
    models = _parse_models(entry.get("models"), fail)
    numbers = {}
    fields = Upstream.__dataclass_fields__
    for key, default in (
        ("connect_timeout", settings.connect_timeout),
        ("read_timeout", settings.read_timeout),
        ("priority", fields["priority"].default),
        ("weight", fields["weight"].default),
    ):
        value = entry.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (key != "priority" and value == 0)
        ):
            raise fail(f"{key} must be a positive number")
        numbers[key] = value
    return Upstream(
        name=name,
        base_url=base_url.rstrip("/"),
        dialect=dialect,
        api_key=_key(entry, fail),
        query=dict(query),
        models=models,
        connect_timeout=float(numbers["connect_timeout"]),
        read_timeout=float(numbers["read_timeout"]),
        priority=int(numbers["priority"]),
        weight=float(numbers["weight"]),
    )


def _key(entry: dict[str, Any], fail: Fail) -> str | None:
    if "api_key" in entry and "api_key_env" in entry:
        raise fail("give api_key or api_key_env, not both")
    if "api_key_env" in entry:
        variable = entry["api_key_env"]
        value = os.environ.get(variable, "").strip() if isinstance(variable, str) else ""
        if not value:
            raise fail(f"environment variable {variable} (api_key_env) is not set")
        return value
    key = entry.get("api_key")
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise fail("api_key must be a non-empty string")
    return key


def _parse_models(raw: Any, fail: Fail) -> dict[str, ModelRoute]:
    if raw is None:
        return {name: _default_route(name) for name in OFFERED_MODELS}
    if not isinstance(raw, dict) or not raw:
        raise fail("models must be a table of model names")
    routes = {}
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - _MODEL_KEYS:
            raise fail(f"model '{name}' may only set deployment, sizes, seconds")
        route = _default_route(name, spec.get("deployment"))
        sizes = tuple(spec.get("sizes", route.sizes))
        seconds = tuple(str(value) for value in spec.get("seconds", route.seconds))
        if not sizes:
            raise fail(f"model '{name}' is not a known Sora model; list its sizes")
        if not all(isinstance(size, str) and "x" in size for size in sizes):
            raise fail(f"model '{name}': sizes must be strings like '1280x720'")
        routes[name] = ModelRoute(name, route.deployment, sizes, seconds)
    return routes


def refuse_open_relay(catalog: Catalog, settings: Settings, *, identifies_callers: bool) -> None:
    """Refuse to start when upstream keys would be spent by anyone who can reach the proxy.

    :raises ConfigError: keys are configured upstream, callers are not identified, and
        ``SORA_PROXY_ALLOW_ANONYMOUS`` is not set.
    """
    keyed = any(upstream.api_key for upstream in catalog.upstreams.values())
    if keyed and not identifies_callers and not settings.allow_anonymous:
        raise ConfigError(
            "SORA_PROXY_API_KEYS",
            "is empty while upstream keys are configured: anyone could spend them; "
            "set caller keys or SORA_PROXY_ALLOW_ANONYMOUS=true",
        )
