"""Predict: upload photos or take one with the camera; every face with all four heads' probabilities."""

import streamlit as st

from mtfer import abstain, charts, faces, predict_view, runs, settings
from mtfer.inference import FacePrediction, Predictor
from mtfer.uploads import UploadResult, analyse_upload

if not st.session_state.get("mtfer_app"):
    # Opened by its URL before app.py ever ran in this server, Streamlit runs a pages/ file on its own (its
    # pages-folder mode). Hand over to app.py's navigation, which then shows this same page.
    st.session_state["mtfer_app"] = True
    st.navigation([st.Page(lambda: None, url_path="start", default=True), st.Page(__file__)], position="hidden")
    st.rerun()

IMAGE_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]
NO_FACE_TIPS = """No face was found in this photo. Some tips:

- use a well-lit photo, without strong shadows or back light;
- the face should look roughly towards the camera (not in profile), eyes visible;
- the face should be at least about 40 pixels wide: zoom in or crop a photo of a crowd or a distant person;
- sunglasses, masks or hands over the face make faces hard to find."""


@st.cache_resource(show_spinner="Loading the model ...", max_entries=4)
def load_predictor(path: str, modified: int) -> Predictor:
    """One Predictor per model folder (and version of its files), shared by every session."""
    return Predictor(path)


@st.cache_data(show_spinner=False, max_entries=64)
def analyse(path: str, modified: int, name: str, data: bytes, largest_only: bool) -> UploadResult:
    """Faces or a one-line error for one upload (mtfer.uploads.analyse_upload), cached by content."""
    return analyse_upload(load_predictor(path, modified), name, data, largest_only)


def modified_ns(path) -> int:
    """When the bundle's files last changed: a replaced model gets a fresh Predictor."""
    files = [path / runs.MODEL_FILE, path / runs.METADATA_FILE]
    return max((f.stat().st_mtime_ns for f in files if f.is_file()), default=0)


st.title("Predict")
st.markdown(
    "Upload a photo (or take one with the camera): for every face in it, the model guesses the emotion shown, "
    "gender, race group and age group, and shows how sure it is of each."
)

choices = settings.model_choices()
if not choices:
    st.error("No trained model was found. Train one on the Train page first.")
    st.stop()
labels = [c.label for c in choices]
with st.sidebar:
    chosen = st.selectbox(
        "Model", labels, key="predict_model", help="The active model is used unless you pick another."
    )
model = choices[labels.index(chosen)]

uploads = st.file_uploader(
    "Upload photos (jpg, png, webp, bmp, tiff, gif)",
    type=IMAGE_TYPES,
    accept_multiple_files=True,
    key="predict_uploads",
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
    st.stop()

try:
    modified = modified_ns(model.path)
    predictor = load_predictor(str(model.path), modified)
except (ValueError, OSError) as error:  # runs.RunError is a ValueError
    st.error(f"The model {model.path.name} could not be loaded: {error}")
    st.stop()
# How sure the model must be to state an answer, per task: chosen on validation data (mtfer.abstain).
min_confidence = abstain.min_confidences(predictor.bundle.metadata, predictor.tasks)
notes = [predict_view.NOT_SURE_NOTE] + ([predict_view.RACE_NOTE] if "race" in predictor.tasks else [])
st.caption("  \n".join(notes))

results: list[tuple[str, list[FacePrediction]]] = []
for i, (name, data) in enumerate(items):
    with st.container(border=True):
        st.subheader(charts.escape_markdown(name))
        predictions, error, found = analyse(str(model.path), modified, name, data, largest_only)
        if predictions is None:
            st.error(charts.escape_markdown(error or ""), icon=":material/error:")
            continue
        image = faces.decode_image(data)  # read fine just now; decoded again, as whole photos are not cached
        results.append((name, predictions))
        if not predictions:
            st.warning(NO_FACE_TIPS, icon=":material/sentiment_neutral:")
            st.image(predict_view.draw_faces(image, [], []), caption=charts.escape_markdown(name))
            continue
        verdicts = [predict_view.face_verdicts(p, min_confidence) for p in predictions]
        labels = [predict_view.photo_lines(k, v) for k, v in enumerate(verdicts, start=1)]
        st.image(
            predict_view.draw_faces(image, [p.box for p in predictions], labels),
            caption=predict_view.faces_found_caption(len(predictions), found),
        )
        for k, (p, face_verdicts) in enumerate(zip(predictions, verdicts, strict=True), start=1):
            st.markdown(predict_view.face_line(k, face_verdicts))
            face_column, chart_column = st.columns([1, 3])
            face_column.image(charts.enlarge(p.aligned), caption=predict_view.aligned_caption(p))
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
    table = predict_view.people_table(results, min_confidence)
    with st.expander("All faces as a table"):
        st.dataframe(table, hide_index=True)
    left, right = st.columns(2)
    left.download_button(
        "Download CSV",
        table.to_csv(index=False),
        file_name="mtfer-predictions.csv",
        mime="text/csv",
        key="predict_download_csv",
        on_click="ignore",
    )
    right.download_button(
        "Download JSON",
        predict_view.people_json(results, min_confidence),
        file_name="mtfer-predictions.json",
        mime="application/json",
        key="predict_download_json",
        on_click="ignore",
    )
