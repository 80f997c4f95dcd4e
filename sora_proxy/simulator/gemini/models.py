"""The Veo models the simulator serves, with what each allows (``gemini.md`` §3)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VeoModel:
    """One model: the ``durationSeconds``, ``resolution`` and ``aspectRatio`` it takes."""

    durations: tuple[int, ...]
    resolutions: tuple[str, ...]
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16")


_VEO_3 = VeoModel((4, 6, 8), ("720p", "1080p"))
_VEO_31 = VeoModel((4, 6, 8), ("720p", "1080p", "4k"))

#: Every model id the simulator answers, as in ``models/{id}:predictLongRunning``.
MODELS: dict[str, VeoModel] = {
    "veo-3.1-generate-preview": _VEO_31,
    "veo-3.1-fast-generate-preview": _VEO_31,
    "veo-3.1-lite-generate-preview": _VEO_3,
    "veo-3.0-generate-001": _VEO_3,
    "veo-3.0-fast-generate-001": _VEO_3,
    "veo-2.0-generate-001": VeoModel((5, 6, 7, 8), ("720p",)),
}
