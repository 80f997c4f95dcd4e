"""The routes whose input is a video: edits, extensions and characters, under ``/v1``.

An edit or extension names its source video in any of the forms the upstream takes:

* multipart with a ``video`` **file** part (a real video, sniffed by its magic bytes: MP4/MOV
  ``ftyp`` at offset 4 or WebM's EBML header; the part's Content-Type is not trusted);
* multipart with a ``video[id]`` text part (what the openai SDK sends for ``video={"id": ...}``);
* JSON ``{"video": {"id": ...}, ...}``.

A source named by id must exist (else 404) and be completed (else 400). The new video takes the
source's model and size (``sora-2``, ``720x1280`` for an uploaded file). An extension's
``seconds`` is the length of the added segment; the new video's ``seconds`` is the stitched
total when the source is known (the segment alone for an uploaded file).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import FileStorage

from .validation import (
    MODELS,
    SECONDS,
    SIZES,
    SimError,
    check_length,
    check_prompt,
    check_seconds,
    invalid_type,
    kind,
    missing_parameter,
)
from .views import completed_source, get_state, json_body, new_video

bp = Blueprint("sora_simulator_edits", __name__, url_prefix="/v1")

#: ``name`` of a character: this many characters at most (and at least one).
MAX_CHARACTER_NAME = 80

_WEBM_MAGIC = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True)
class _Input:
    """A parsed edit/extension body: its scalar fields and the source video, if named by id."""

    fields: dict[str, object]
    source: dict[str, Any] | None


def is_video(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts an MP4/MOV or a WebM/Matroska file."""
    return head[4:8] == b"ftyp" or head[:4] == _WEBM_MAGIC


def check_video_file(upload: FileStorage, param: str = "video") -> None:
    """Require the uploaded part to be a video by its magic bytes, else raise the 400."""
    head = upload.stream.read(12)
    upload.stream.seek(0)
    if not is_video(head):
        message = (
            f"Invalid '{param}': the file is not a supported video. "
            "Supported formats are MP4, MOV and WebM."
        )
        raise SimError(400, message, param=param, code="invalid_video")


def _multipart_only() -> None:
    if request.mimetype != "multipart/form-data":
        message = (
            f"Invalid Content-Type header ({request.mimetype or 'none'}), expected "
            "multipart/form-data."
        )
        raise SimError(400, message)


def _read_input(action: str) -> _Input:
    """Parse the body of an edit or extension, checking its ``video`` whatever its form."""
    if request.mimetype == "application/json":
        body = json_body()
        if not isinstance(body, dict):
            message = f"Invalid type for body: expected an object, but got {kind(body)} instead."
            raise SimError(400, message, code="invalid_type")
        video = body.get("video")
        if video is None:
            raise missing_parameter("video")
        if not isinstance(video, dict):
            raise invalid_type("video", "an object", kind(video))
        video_id = video.get("id")
        if not isinstance(video_id, str) or not video_id:
            raise missing_parameter("video.id")
        return _Input(body, completed_source(video_id, "video.id", action))
    _multipart_only()
    fields: dict[str, object] = dict(request.form.items())
    if "video" in request.files:
        check_video_file(request.files["video"])
        return _Input(fields, None)
    video_id = request.form.get("video[id]")
    if video_id:
        return _Input(fields, completed_source(video_id, "video[id]", action))
    if "video" in request.form:
        raise invalid_type("video", "a file or an object", "a string")
    raise missing_parameter("video")


def _model_and_size(source: dict[str, Any] | None) -> tuple[str, str]:
    if source is None:
        return MODELS[0], SIZES[0]
    return str(source["model"]), str(source["size"])


@bp.post("/videos/edits")
def edit_video() -> Response:
    """Create a new video by editing a source video (uploaded, or completed and named by id)."""
    given = _read_input("edited")
    prompt = check_prompt(given.fields.get("prompt"))
    model, size = _model_and_size(given.source)
    seconds = SECONDS[0] if given.source is None else str(given.source["seconds"])
    return new_video(prompt, model, size, seconds, _source=_source_id(given))


@bp.post("/videos/extensions")
def extend_video() -> Response:
    """Create a new video that continues a source video by ``seconds`` more."""
    given = _read_input("extended")
    prompt = check_prompt(given.fields.get("prompt"))
    segment = check_seconds(given.fields.get("seconds"))
    model, size = _model_and_size(given.source)
    total = segment
    if given.source is not None and str(given.source["seconds"]).isdigit():
        total = str(int(given.source["seconds"]) + int(segment))
    return new_video(prompt, model, size, total, _source=_source_id(given))


def _source_id(given: _Input) -> str | None:
    return None if given.source is None else str(given.source["id"])


@bp.post("/videos/characters")
def create_character() -> Response:
    """Create a character from an uploaded video and a ``name`` (1..80 characters)."""
    _multipart_only()
    if "name" in request.files and "name" not in request.form:
        raise invalid_type("name", "a string", "a file")
    name = check_length("name", request.form.get("name"), 1, MAX_CHARACTER_NAME)
    if "video" not in request.files:
        if "video" in request.form:
            raise invalid_type("video", "a file", "a string")
        raise missing_parameter("video")
    check_video_file(request.files["video"])
    return jsonify(get_state().add_character(name))


@bp.get("/videos/characters/<character_id>")
def get_character(character_id: str) -> Response:
    """Return a character made by :func:`create_character`."""
    character = get_state().get_character(character_id)
    if character is None:
        message = f"Character with id '{character_id}' not found."
        raise SimError(404, message, param="character_id", code="character_not_found")
    return jsonify(character)
