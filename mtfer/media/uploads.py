"""What the Predict page does with one uploaded file: decode it (size-checked from its header, first frame of an
animation), find the faces and run the network. Any upload ends as faces or one line for the user, never an
exception."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from mtfer.core import decoding, faces

if TYPE_CHECKING:
    from mtfer.core.inference import FacePrediction, Predictor

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadResult(NamedTuple):
    faces: list[FacePrediction] | None  # the faces shown (maybe none); None when the file was refused
    error: str | None  # one line for the user when the file was refused
    found: int = 0  # faces found in the photo (more than shown when only the largest is asked for)


def upload_error(name: str, reason: object) -> str:
    """'<name> is not a photo this app can read: <reason>' on one line."""
    name = _CONTROL.sub("?", str(name)) or "(no name)"
    return f"{name} is not a photo this app can read: {' '.join(str(reason).split())}"


def analyse_upload(predictor: Predictor, name: str, data: bytes, largest_only: bool = False) -> UploadResult:
    """The faces in one uploaded file (only the largest when `largest_only`, with the count of all), or why the file
    cannot be read."""
    try:
        image = decoding.decode_image(data)
        found = predictor.predict_image(image)  # every face: the network costs milliseconds beside the detection
        return UploadResult(faces.shown_faces(found, largest_only), None, len(found))
    except decoding.ImageError as error:
        return UploadResult(None, upload_error(name, error))
    except MemoryError:
        return UploadResult(None, upload_error(name, "too large to process with the memory available"))
