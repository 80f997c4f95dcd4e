"""Turn the results (one JSON-able dict) into ``latest.md`` and ``latest.png``.

Layout of ``results``: ``meta`` (date, machine, versions, plan), ``systems`` (key -> label,
note, availability), then one entry per workload (``retrieve``, ``create``, ``download``,
``upload``), each mapping a system key to its figures or to ``{"error": text}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from systems import LABELS, ORDER

NA = "n/a"
Results = dict[str, Any]


def _get(results: Results, workload: str, system: str, *path: str) -> Any:
    """A figure, or ``None`` where the system did not run or the workload failed."""
    node: Any = results.get(workload, {}).get(system)
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return NA
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:,.{digits}f}"
    return str(value)


def _systems(results: Results, workload: str | None = None) -> list[str]:
    """Systems in report order; for a workload, those that ran it or could not start."""
    keys = [key for key in ORDER if key in results["systems"]]
    if workload is None:
        return keys
    return [
        key
        for key in keys
        if key in results.get(workload, {}) or results["systems"][key].get("unavailable")
    ]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return [_row(header), _row(align), *(_row(row) for row in rows), ""]


def _failure(results: Results, workload: str, system: str) -> str | None:
    entry = results.get(workload, {}).get(system)
    if entry is None:
        return (
            "n/a (not started, see set-up)"
            if results["systems"][system].get("unavailable")
            else "not run"
        )
    if isinstance(entry, dict) and "error" in entry:
        return str(entry["error"])
    return None


def _retrieve(results: Results) -> list[str]:
    plan = results["meta"]["plan"]
    conns = plan["connections"]
    header = ["system"]
    for c in conns:
        header += [f"c{c} req/s", "(range)", f"c{c} p50 ms", f"c{c} p99 ms"]
    header.append("non-2xx / errors")
    rows = []
    for key in _systems(results, "retrieve"):
        row = [LABELS[key]]
        bad = 0
        for c in conns:
            fig = _get(results, "retrieve", key, f"c{c}") or {}
            spread = (
                f"{fig['rps_min']:,.0f}-{fig['rps_max']:,.0f}"
                if "rps_min" in fig and plan.get("wrk_runs", 1) > 1
                else ""
            )
            row += [
                _fmt(fig.get("rps")),
                spread,
                _fmt(fig.get("p50_ms"), 2),
                _fmt(fig.get("p99_ms"), 2),
            ]
            bad += fig.get("non_2xx", 0) + fig.get("socket_errors", 0)
        row.append(_failure(results, "retrieve", key) or str(bad))
        rows.append(row)
    runs = plan.get("wrk_runs", 1)
    return [
        f"## Retrieve `GET /v1/videos/{{id}}` (wrk -t2, {runs} run(s) of "
        f"{plan['wrk_seconds']} s per concurrency)",
        "",
        "The run with the median req/s is shown (its p50/p99), with the range over runs.",
        "",
        *_table(header, rows),
    ]


CREATE_FORMS = {
    "json": "JSON, data-URI string",
    "multipart": "multipart file part",
    "json_fit": "JSON data URI, 1600x900 (needs fit)",
}


def added_ms(results: Results, system: str, form: str) -> float | None:
    """Median create latency of ``system`` minus the upstream alone's, for one form."""
    ours = _get(results, "create", system, form, "median_ms")
    base = _get(results, "create", "upstream", form, "median_ms")
    return None if ours is None or base is None else ours - base


def _create(results: Results) -> list[str]:
    plan = results["meta"]["plan"]
    header = ["system"]
    for title in CREATE_FORMS.values():
        header += [f"{title}: median ms", "added ms", "status"]
    rows = []
    for key in _systems(results, "create"):
        row = [LABELS[key]]
        for form in CREATE_FORMS:
            fig = _get(results, "create", key, form)
            if fig is None:
                row += [NA, NA, _failure(results, "create", key) or NA]
                continue
            statuses = ",".join(str(s) for s in fig["statuses"])
            row += [
                _fmt(fig["median_ms"], 1),
                "0 (baseline)" if key == "upstream" else _fmt(added_ms(results, key, form), 1),
                statuses,
            ]
        rows.append(row)
    sizes = results["meta"]["images"]
    return [
        f"## Create with a reference image (median of {plan['create_count']}, after "
        f"{plan['create_warmup']} warm-up)",
        "",
        f"Reference: noise PNG, {sizes['exact'] / 1e6:.2f} MB at 1280x720 (RGBA), or "
        f"{sizes['larger'] / 1e6:.2f} MB at 1600x900 for the fit case. The upstream alone "
        "is sent the multipart body it accepts (for the fit case: the image already "
        'fitted); "added" is against that.',
        "",
        *_table(header, rows),
    ]


def _transfer(results: Results, workload: str, title: str) -> list[str]:
    header = [
        "system",
        "status",
        "MB/s",
        "(range)",
        "runs",
        "seconds",
        "RSS before MB",
        "peak MB",
        "growth MB",
    ]
    rows = []
    for key in _systems(results, workload):
        fig = _get(results, workload, key)
        failure = _failure(results, workload, key)
        if fig is None or failure:
            rows.append([LABELS[key], failure or NA, *[NA] * 7])
            continue
        status = str(fig["status"]) + ("" if fig["ok"] else " (failed)")
        spread = (
            f"{fig['mb_per_s_min']:,.0f}-{fig['mb_per_s_max']:,.0f}"
            if fig.get("runs", 1) > 1
            else ""
        )
        rows.append(
            [
                LABELS[key],
                status,
                _fmt(fig["mb_per_s"]),
                spread,
                str(fig.get("runs", 1)),
                _fmt(fig["seconds"], 2),
                _fmt(fig["rss_before_mb"], 1),
                _fmt(fig["rss_peak_mb"], 1),
                _fmt(fig["rss_growth_mb"], 1),
            ]
        )
    return [
        title,
        "",
        "MB/s: the median run (runs taking over 10 s are not repeated). RSS: the "
        "serving process (the one whose RSS grew most: a gunicorn, nginx or uvicorn worker), "
        "sampled every 20 ms; before/peak/growth of the run that grew most.",
        "",
        *_table(header, rows),
    ]


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return NA
    return f"{ours / theirs:.2f}x"


def _targets(results: Results) -> list[str]:
    conns = results["meta"]["plan"]["connections"]
    rows = []

    def fig(workload: str, system: str, *path: str) -> float | None:
        value = _get(results, workload, system, *path)
        ok = _get(results, workload, system, "ok")
        return None if value is None or ok is False else float(value)

    def verdict(passed: bool | None) -> str:
        return NA if passed is None else ("yes" if passed else "**no**")

    for c in conns:
        ours, nginx, lite = (
            fig("retrieve", s, f"c{c}", "rps") for s in ("sora_proxy", "nginx", "litellm")
        )
        keyed = fig("retrieve", "sora_proxy_keyed", f"c{c}", "rps")
        passed = (
            None
            if ours is None or nginx is None or lite is None
            else (ours >= 0.25 * nginx and ours >= 2 * lite)
        )
        rows.append(
            [
                f"retrieve c{c} req/s",
                _fmt(ours),
                _fmt(keyed),
                _fmt(nginx),
                _fmt(lite),
                _ratio(ours, nginx),
                _ratio(ours, lite),
                ">= 0.25x nginx, >= 2x LiteLLM",
                verdict(passed),
            ]
        )
    for workload in ("download", "upload"):
        # A LiteLLM whose 2-worker download failed was measured again with 1 worker.
        lite_key = (
            "litellm"
            if fig(workload, "litellm", "mb_per_s") is not None
            or fig(workload, "litellm_1w", "mb_per_s") is None
            else "litellm_1w"
        )
        suffix = " (1 worker)" if lite_key == "litellm_1w" else ""
        ours, keyed, nginx, lite = (
            fig(workload, s, "mb_per_s")
            for s in ("sora_proxy", "sora_proxy_keyed", "nginx", lite_key)
        )
        target = ">= 0.8x nginx" if workload == "download" else "(none)"
        met = (
            verdict(None if ours is None or nginx is None else ours >= 0.8 * nginx)
            if workload == "download"
            else ""
        )
        rows.append(
            [
                f"{workload} MB/s",
                _fmt(ours),
                _fmt(keyed),
                _fmt(nginx),
                _fmt(lite) + (suffix if lite is not None else ""),
                _ratio(ours, nginx),
                _ratio(ours, lite),
                target,
                met,
            ]
        )
        ours, keyed, nginx, lite = (
            fig(workload, s, "rss_growth_mb")
            for s in ("sora_proxy", "sora_proxy_keyed", "nginx", lite_key)
        )
        rows.append(
            [
                f"{workload} RSS growth MB",
                _fmt(ours, 1),
                _fmt(keyed, 1),
                _fmt(nginx, 1),
                _fmt(lite, 1) + (suffix if lite is not None else ""),
                "",
                "",
                "< 50 MB",
                verdict(None if ours is None else ours < 50),
            ]
        )
    for form in ("json", "json_fit"):
        values = [
            added_ms(results, s, form) if _get(results, "create", s, form, "ok") else None
            for s in ("sora_proxy", "sora_proxy_keyed", "nginx", "litellm")
        ]
        ours = values[0]
        rows.append(
            [
                f"create added ms ({CREATE_FORMS[form]})",
                *(_fmt(v, 1) for v in values),
                NA,
                NA,
                "<= 100 ms",
                verdict(None if ours is None else ours <= 100),
            ]
        )
    header = [
        "figure",
        "sora_proxy",
        "sora_proxy (keyed)",
        "nginx",
        "LiteLLM",
        "ours / nginx",
        "ours / LiteLLM",
        "target",
        "met",
    ]
    return [
        "## sora_proxy (pass-through) against nginx and LiteLLM",
        "",
        "n/a in a create row: that system did not answer 2xx (see the create table).",
        "",
        *_table(header, rows),
    ]


def _documented(results: Results) -> list[str]:
    """The documented deployment's download of its archived video against nginx serving the
    same bytes itself (the upstream alone: a static file by sendfile), same client."""
    if "sora_proxy_nginx" not in results["systems"]:
        return []

    def mb_s(system: str) -> float | None:
        value = _get(results, "download", system, "mb_per_s")
        ok = _get(results, "download", system, "ok")
        return None if value is None or not ok else float(value)

    ours, static = mb_s("sora_proxy_nginx"), mb_s("upstream")
    low = _get(results, "download", "sora_proxy_nginx", "mb_per_s_min")
    high = _get(results, "download", "sora_proxy_nginx", "mb_per_s_max")
    paired = results.get("download_paired")
    if paired:  # alternating runs of both, so the machine's drift hits both alike
        ours, static = paired["ours_median"], paired["static_median"]
        low, high = min(paired["ours"]), max(paired["ours"])
    passed = None if ours is None or static is None else ours >= 0.9 * static
    verdict = NA if passed is None else ("PASS" if passed else "**FAIL**")
    failure = _failure(results, "download", "sora_proxy_nginx")
    size = results["meta"]["plan"]["download_bytes"] / 2**20
    rows = [
        [
            f"download MB/s, {size:.0f} MiB archived video",
            failure or _fmt(ours),
            "" if low is None or high is None else f"{low:,.0f}-{high:,.0f}",
            _fmt(static),
            _ratio(ours, static),
            ">= 0.9x",
            verdict,
        ]
    ]
    header = [
        "figure",
        "sora_proxy behind nginx",
        "(range)",
        "nginx's own static file",
        "ratio",
        "target",
        "met",
    ]
    return [
        "## The documented deployment's download against nginx's own",
        "",
        "sora_proxy behind the shipped nginx site (with the hand-off setting) downloading a "
        "video it archived, against nginx serving the same bytes as a static file by "
        "sendfile (the upstream alone), same client (one connection, 1 MiB reads), once the "
        "proxy's tracker has nothing pending (no archive copy running): the medians of "
        "downloads alternating between the two (7 each), when they ran.",
        "",
        *_table(header, rows),
    ]


def markdown(results: Results) -> str:
    """The whole report."""
    meta = results["meta"]
    lines = [
        "# Benchmarks: sora_proxy side by side with nginx and LiteLLM",
        "",
        f"Generated by `make bench` (`bench/run.py{' --quick' if meta['quick'] else ''}`) "
        f"on {meta['date']}, total wall time {meta['wall_s']:.0f} s.",
        "",
        f"Machine: {meta['machine']}. All servers and clients share these cores.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "## Set-up",
        "",
        f"- upstream: {meta['upstream']}",
    ]
    for key in _systems(results):
        info = results["systems"][key]
        lines.append(f"- {LABELS[key]}: {info.get('unavailable') or info['note']}")
    lines += [
        "",
        *_targets(results),
        *_documented(results),
        *_retrieve(results),
        *_create(results),
        *_transfer(
            results,
            "download",
            f"## Download `GET /v1/videos/{{id}}/content`, "
            f"{meta['plan']['download_bytes'] / 2**20:.0f} MiB",
        ),
        *_transfer(
            results,
            "upload",
            f"## Upload `POST /v1/videos/edits`, "
            f"{meta['plan']['upload_bytes'] / 1e6:.0f} MB video, multipart with "
            "Content-Length",
        ),
    ]
    notes = meta.get("notes", [])
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


def chart(results: Results, path: Path) -> None:
    """Bar charts, one per figure, systems side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conns = results["meta"]["plan"]["connections"]
    panels: list[tuple[str, str, tuple[str, ...]]] = [
        *(
            (f"retrieve c{c}: req/s (higher is better)", "retrieve", (f"c{c}", "rps"))
            for c in conns
        ),
        ("create, JSON data URI: median ms", "create", ("json", "median_ms")),
        ("create, multipart file: median ms", "create", ("multipart", "median_ms")),
        ("download: MB/s", "download", ("mb_per_s",)),
        ("download: RSS growth MB", "download", ("rss_growth_mb",)),
        ("upload: MB/s", "upload", ("mb_per_s",)),
        ("upload: RSS growth MB", "upload", ("rss_growth_mb",)),
    ]
    colours = {
        "upstream": "#9e9e9e",
        "sora_proxy": "#1f77b4",
        "sora_proxy_keyed": "#6baed6",
        "sora_proxy_nginx": "#17becf",
        "nginx": "#2ca02c",
        "litellm": "#d62728",
        "litellm_1w": "#ff9896",
    }
    figure, axes = plt.subplots(2, 4, figsize=(18, 8))
    flat = list(axes.flat)
    for ax, (title, workload, keys) in zip(flat, panels, strict=False):
        systems = _systems(results, workload)
        values = [_get(results, workload, s, *keys) for s in systems]
        # A failed run's figures are not the system's performance: show n/a instead.
        values = [
            v
            if _get(results, workload, s, keys[0], "ok") is not False
            and _get(results, workload, s, "ok") is not False
            else None
            for s, v in zip(systems, values, strict=True)
        ]
        heights = [float(v) if isinstance(v, int | float) else 0.0 for v in values]
        bars = ax.bar(range(len(systems)), heights, color=[colours[s] for s in systems])
        ax.set_xticks(
            range(len(systems)), [LABELS[s] for s in systems], rotation=30, ha="right", fontsize=8
        )
        ax.set_title(title, fontsize=9)
        if workload == "retrieve":
            ax.set_yscale("log")  # nginx and LiteLLM are two orders of magnitude apart
        for bar, value in zip(bars, values, strict=True):
            label = NA if not isinstance(value, int | float) else f"{value:,.0f}"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    for ax in flat[len(panels) :]:
        ax.axis("off")
    meta = results["meta"]
    figure.suptitle(
        "sora_proxy vs nginx vs LiteLLM, same upstream on 127.0.0.1 "
        f"({meta['date']}; {meta['machine']})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
