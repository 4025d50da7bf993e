"""The Predict page's photo mode: upload photos or take a snapshot with the camera; every face in them with all four
heads' answers and probabilities, why the model gave its emotion answer, and the results as CSV or JSON."""

import numpy as np
import streamlit as st

from mtfer.app import figures, predict_view, wording
from mtfer.assess import abstain, explain
from mtfer.core import decoding
from mtfer.core.inference import FacePrediction
from mtfer.media import answers, draw
from mtfer.media.tables import csv_text, predictions_table
from mtfer.media.uploads import UploadResult, analyse_upload
from mtfer.store import settings
from pages.predict_modes.shared import NO_FACE_TIPS, load_predictor, loaded_predictor

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
FACE_PX = 160  # the aligned face and its heatmap: big enough to see, modest where a phone stacks the columns
PHOTO_MAX_UPLOAD_MB = 50  # per photo; videos may be larger (mtfer.media.video.MAX_UPLOAD_MB, .streamlit/config.toml)


@st.cache_data(show_spinner=False, max_entries=64)
def analyse(path: str, modified: int, name: str, data: bytes, largest_only: bool) -> UploadResult:
    """Faces or a one-line error for one upload (mtfer.media.uploads.analyse_upload), cached by content."""
    return analyse_upload(load_predictor(path, modified), name, data, largest_only)


@st.cache_data(show_spinner=False, max_entries=32)
def drawn(data: bytes, boxes: tuple, labels: tuple) -> draw.Drawing:
    """The photo with its faces drawn (mtfer.media.draw), cached: a photo is decoded once per upload, not again
    on every rerun of the page (a big one costs hundreds of MB and seconds each time)."""
    return draw.draw_faces(decoding.decode_image(data), list(boxes), [list(lines) for lines in labels])


@st.cache_data(show_spinner="Finding which parts of the face mattered ...", max_entries=256)
def why_image(path: str, modified: int, face: np.ndarray) -> tuple[np.ndarray, str]:
    """The top emotion's heatmap over one aligned face, enlarged, and its one-line caption (mtfer.explain)."""
    explanation = explain.explain_face(load_predictor(path, modified), face, task="emotion")
    return explain.highlight(face, explanation.heatmap), explain.why_caption(explanation)


def show_why(path: str, modified: int, prediction: FacePrediction, key: str) -> None:
    """Per face: a "Why this emotion?" toggle; the heatmap is worked out only once it is switched on (cached)."""
    if "emotion" not in prediction.probabilities:
        return
    help_text = "Shows which parts of the face most made the model give its emotion answer."
    if st.toggle("Why this emotion?", key=key, help=help_text):
        image, caption = why_image(path, modified, prediction.aligned)
        st.image(image, caption=caption, width=FACE_PX)  # as wide as the face above it


def photo_uploads(model: settings.ModelChoice) -> None:
    """The photo mode: uploads and the camera's snapshot, then per photo its faces, each with its answers, the
    probability charts and "Why this emotion?", and the downloads for all of them."""
    uploads = st.file_uploader(
        "Upload photos (jpg, png, webp, bmp, tiff, gif)",
        type=IMAGE_TYPES,
        accept_multiple_files=True,
        key="predict_uploads",
        max_upload_size=PHOTO_MAX_UPLOAD_MB,
    )
    left, right = st.columns(2)
    use_camera = left.toggle("Use the camera", key="predict_use_camera")
    largest_only = right.toggle("Largest face only", key="predict_largest_only")
    photo = st.camera_input("Take a photo", key="predict_camera") if use_camera else None

    items = [(f.name, f.getvalue()) for f in uploads or []]
    if photo is not None:
        items.append(("camera.jpg", photo.getvalue()))
    if not items:
        st.info("Upload one or more photos, or switch on the camera, to see what the model makes of each face.")
        return

    if (loaded := loaded_predictor(model)) is None:
        return
    predictor, modified = loaded
    # How sure the model must be to state an answer, per task: chosen on validation data (mtfer.assess.abstain).
    min_confidence = abstain.min_confidences(predictor.bundle.metadata, predictor.tasks)
    notes = [predict_view.NOT_SURE_NOTE] + ([predict_view.RACE_NOTE] if "race" in predictor.tasks else [])
    st.caption("  \n".join(notes))

    results: list[tuple[str, list[FacePrediction]]] = []
    refused: list[tuple[str, str]] = []  # (file, why it could not be read): rows of the CSV too
    for i, (name, data) in enumerate(items):
        with st.container(border=True):
            st.subheader(wording.escape_markdown(name))
            predictions, error, found = analyse(str(model.path), modified, name, data, largest_only)
            if predictions is None:
                st.error(wording.escape_markdown(error or ""), icon=":material/error:")
                refused.append((name, error or ""))
                continue
            results.append((name, predictions))
            if not predictions:
                st.warning(NO_FACE_TIPS, icon=":material/sentiment_neutral:")
                st.image(drawn(data, (), ()).image, caption=wording.escape_markdown(name))
                continue
            verdicts = [answers.face_verdicts(p, min_confidence) for p in predictions]
            labels = [answers.photo_lines(k, v) for k, v in enumerate(verdicts, start=1)]
            drawing = drawn(data, tuple(p.box for p in predictions), tuple(tuple(lines) for lines in labels))
            if drawing.labelled:
                st.image(drawing.image, caption=predict_view.faces_found_caption(len(predictions), found))
            else:  # a crowd: numbers on the faces, the answers in a table under the photo
                st.image(drawing.image, caption=predict_view.crowd_caption(len(predictions)))
                st.dataframe(
                    predict_view.answers_table(verdicts),
                    hide_index=True,
                    height=predict_view.table_height(len(verdicts)),
                    column_config={"Face": st.column_config.NumberColumn(width="small")},
                )
            for k, (p, face_verdicts) in enumerate(zip(predictions, verdicts, strict=True), start=1):
                st.markdown(answers.face_line(k, face_verdicts))
                face_column, chart_column = st.columns([1, 3])
                face_column.image(figures.enlarge(p.aligned), caption=predict_view.aligned_caption(p), width=FACE_PX)
                with face_column:
                    show_why(str(model.path), modified, p, key=f"why-{i}-{k}")
                with chart_column:
                    chart_columns = st.columns(2)
                    for j, (task, probabilities) in enumerate(p.probabilities.items()):
                        chart_columns[j % 2].plotly_chart(
                            predict_view.probability_figure(
                                task, probabilities, face_verdicts[task], min_confidence.get(task)
                            ),
                            key=f"probabilities-{i}-{k}-{task}",
                            config={"displayModeBar": False},
                        )

    if any(preds for _, preds in results):
        st.subheader("Download the results")
        st.caption(f"Answers by {model.label}; the file names carry the model's folder name ({model.path.name}).")
        table = predict_view.people_table(results, min_confidence)
        with st.expander("All faces as a table"):
            st.dataframe(table, hide_index=True)
        left, right = st.columns(2)
        left.download_button(
            "Download CSV",
            csv_text(predictions_table(results, min_confidence, predictor.classes, refused)),
            file_name=f"mtfer-predictions-{model.path.name}.csv",
            mime="text/csv",
            key="predict_download_csv",
            on_click="ignore",
            help="One row per face, the same columns as for a folder of photos (`mtfer predict DIR --csv`): where the "
            "face is, each answer and every probability; a file that could not be read is a row with the reason.",
        )
        right.download_button(
            "Download JSON",
            predict_view.people_json(results, min_confidence),
            file_name=f"mtfer-predictions-{model.path.name}.json",
            mime="application/json",
            key="predict_download_json",
            on_click="ignore",
        )
