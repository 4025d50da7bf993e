"""mtfer.app.predict_view: what the Predict page shows for a face (answers, "not sure", names for people), the photo
with labels placed outside the faces, the charts and the downloads."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from mtfer.app import predict_view
from mtfer.core import faces
from mtfer.core.inference import FacePrediction
from mtfer.core.tasks import TASK_NAMES, TASKS, display_name
from mtfer.media import answers, draw

MIN_CONFIDENCE = {"emotion": 0.45, "gender": 0.6, "race": 0.55, "age": 0.3}
IDENTIFIER = re.compile(r"african_american|\bunsure\b")


def _prediction(box=(40, 30, 100, 100), **overrides: dict[str, float]) -> FacePrediction:
    """Happy (100%), Female (90%), African American (80%), 20-39 (70%), unless overridden per task."""
    tops = {"emotion": ("happy", 1.0), "gender": ("female", 0.9), "race": ("african_american", 0.8),
            "age": ("20-39", 0.7)}  # fmt: skip
    probabilities = {}
    for task in TASK_NAMES:
        classes = TASKS[task].classes
        top, p = tops[task]
        rest = (1 - p) / (len(classes) - 1)
        probabilities[task] = {c: (p if c == top else rest) for c in classes}
        probabilities[task].update(overrides.get(task, {}))
    return FacePrediction(box, None, 2.5, np.zeros((50, 50), np.uint8), probabilities)


def _unsure_emotion() -> FacePrediction:
    emotion = {"surprise": 0.1, "fear": 0.1, "disgust": 0.05, "happy": 0.06, "sad": 0.28, "angry": 0.21, "neutral": 0.2}
    race = {"caucasian": 0.5, "african_american": 0.1, "asian": 0.4, "other": 0.0}
    return _prediction(emotion=emotion, race=race)


# --- answers ----------------------------------------------------------------------------------------------------


def test_face_line_uses_names_for_people():
    line = answers.face_line(1, answers.face_verdicts(_prediction(), MIN_CONFIDENCE))
    assert line == (
        "**Face 1:** Emotion: Happy (100%) · Gender: Female (90%) · Race: African American (80%) · "
        "Age group: 20-39 years (70%)"
    )


def test_a_weak_top_class_says_not_sure_with_the_runner_up():
    verdicts = answers.face_verdicts(_unsure_emotion(), MIN_CONFIDENCE)
    assert not verdicts["emotion"].sure and not verdicts["race"].sure and verdicts["gender"].sure
    line = answers.face_line(2, verdicts)
    assert "Emotion: **not sure** (Sad 28% or Angry 21%)" in line
    assert "Race: **other / not sure** (Caucasian 50% or Asian 40%)" in line
    assert answers.answer(verdicts["emotion"]) == "Not sure (Sad or Angry)"
    assert answers.answer(verdicts["race"]) == "Other / not sure (Caucasian or Asian)"
    assert answers.photo_lines(2, verdicts) == [
        "2. Emotion: not sure",
        "Female 90%",
        "Race: other / not sure",
        "20-39 years 70%",
    ]
    # The same face is stated once the model is sure enough.
    assert answers.face_verdicts(_unsure_emotion(), {"emotion": 0.25})["emotion"].sure


def test_untaught_gender_unsure_is_never_the_answer():
    p = _prediction(gender={"male": 0.3, "female": 0.25, "unsure": 0.45})
    v = answers.face_verdicts(p, {"gender": 0.0})["gender"]
    assert v.label == "male" and v.runner_up == "female"
    assert answers.shown_classes("gender", TASKS["gender"].classes) == ["male", "female"]
    assert answers.shown_classes("age", TASKS["age"].classes) == list(TASKS["age"].classes)


def test_captions():
    assert predict_view.faces_found_caption(1, 1) == "1 face found"
    assert predict_view.faces_found_caption(2, 2) == "2 faces found"
    assert predict_view.faces_found_caption(1, 3) == "3 faces found, showing the largest"
    assert predict_view.faces_found_caption(0, 0) == "0 faces found"
    assert (
        predict_view.aligned_caption(_prediction())
        == "The face as the model saw it: turned 2° to level the eyes, in grey, 50×50 pixels"
    )
    level = FacePrediction((0, 0, 60, 60), None, 0.2, np.zeros((50, 50), np.uint8), {})
    assert predict_view.aligned_caption(level) == "The face as the model saw it: in grey, 50×50 pixels"
    assert level.note is None and "note" not in level.to_dict()
    small = FacePrediction((0, 0, 31, 30), None, 0.2, np.zeros((50, 50), np.uint8), {})
    assert predict_view.aligned_caption(small).endswith(
        "Note: small face (31 px): enlarged to 50 px for the model, so its answers are less sure"
    )
    assert small.to_dict()["note"] == small.note


# --- the photo --------------------------------------------------------------------------------------------------


def _clean(size, boxes, layout):
    """The promises of a labelled photo: every label inside the canvas, over no face and no other label; every
    leader line crosses no other line and passes through no label but its own and no face but its own."""
    assert layout is not None
    canvas, rects, lines = layout.size, layout.rects, layout.lines
    assert canvas[0] >= size[0] and canvas[1] >= size[1] and len(rects) == len(lines) == len(boxes)
    for r in rects:
        assert r[0] >= 0 and r[1] >= 0 and r[0] + r[2] <= canvas[0] and r[1] + r[3] <= canvas[1], (r, canvas)
        for b in boxes:
            assert not draw.intersects(r, b), f"label {r} over face {b}"
    for a, b in itertools.combinations(rects, 2):
        assert not draw.intersects(a, b), f"labels {a} and {b} overlap"
    for i, line in enumerate(lines):
        if line is None:
            continue
        others = [b for j, b in enumerate(boxes) if j != i] + [r for j, r in enumerate(rects) if j != i]
        assert not any(draw.segment_hits(line, o) for o in others), f"line {i} runs through a face or label"
        for j, other in enumerate(lines):
            assert j == i or other is None or not draw.segments_cross(line, other), f"lines {i} and {j} cross"


def test_a_label_goes_below_its_face_when_there_is_room():
    layout = draw.place_labels((800, 600), [(300, 100, 200, 200)], [(180, 90)], gap=4)
    assert layout.rects == [(310, 304, 180, 90)] and layout.size == (800, 600) and layout.lines == [None]


def test_a_face_filling_the_photo_gets_its_label_under_the_photo():
    size, boxes = (800, 800), [(10, 5, 780, 790)]
    layout = draw.place_labels(size, boxes, [(200, 100)], gap=5)
    _clean(size, boxes, layout)
    assert layout.rects[0][1] >= 800 and layout.size[1] >= 800 + 100 and layout.lines[0] is not None


def test_a_face_at_the_bottom_gets_its_label_above_or_beside():
    size = (800, 600)
    above = draw.place_labels(size, [(300, 400, 200, 200)], [(180, 90)], gap=4)
    assert above.rects[0][1] + above.rects[0][3] <= 400
    beside = draw.place_labels(size, [(300, 50, 200, 550)], [(180, 90)], gap=4)
    assert beside.rects[0][0] >= 500 and beside.size == size


def test_labels_of_a_group_photo_avoid_every_face_and_each_other():
    size = (800, 400)
    boxes = [(40 + 190 * i, 150, 60, 60) for i in range(4)]
    blocks = [(230, 100)] * 4  # wider than the space between faces
    _clean(size, boxes, draw.place_labels(size, boxes, blocks, gap=4))


def test_leader_lines_that_would_cross_or_run_through_a_face_refuse_the_layout():
    # two tall faces side by side, labels too wide to sit beside them: their lines down to one row would cross
    assert draw.segments_cross(((0, 0), (10, 10)), ((0, 10), (10, 0)))
    assert not draw.segments_cross(((0, 0), (10, 0)), ((0, 5), (10, 5)))
    assert draw.segment_hits(((50, 0), (50, 100)), (40, 40, 20, 20))
    assert not draw.segment_hits(((0, 0), (0, 100)), (40, 40, 20, 20))
    # no room for both labels in one row under the photo
    assert draw.place_labels((400, 400), [(150, 0, 100, 395), (0, 0, 140, 400)], [(380, 60)] * 2, gap=4) is None
    # a face above another: the upper one's line down to the band would run through the lower face
    boxes = [(313, 27, 199, 167), (36, 17, 180, 379), (352, 245, 153, 145)]
    assert draw.place_beside((600, 400), boxes, [(120, 60)] * 3, gap=4)[0] is None
    assert draw.place_labels((600, 400), boxes, [(120, 60)] * 3, gap=4) is None
    assert draw.place_labels((600, 400), boxes[:2], [(120, 60)] * 2, gap=4) is not None  # without the lower face


def _composite(count: int, seed: int) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """A crowded group photo's faces: `count` boxes of uneven size in rough rows, none overlapping."""
    rng = np.random.default_rng(seed)
    per_row = 6 if count <= 12 else 7
    boxes = []
    for k in range(count):
        row, col = divmod(k, per_row)
        side = int(rng.integers(60, 95))
        boxes.append((20 + 150 * col + int(rng.integers(0, 30)), 30 + 190 * row + int(rng.integers(0, 40)), side, side))
    width = max(x + w for x, _, w, _ in boxes) + 20
    height = max(y + h for _, y, _, h in boxes) + 30
    return (width, height), boxes


@pytest.mark.parametrize("count", [12, 20])
@pytest.mark.parametrize("seed", range(3))
def test_a_crowd_is_drawn_cleanly_labelled_or_numbered(count, seed):
    size, boxes = _composite(count, seed)
    photo = np.full((size[1], size[0], 3), 128, np.uint8)
    lines = [
        [f"{k}. Happy 87%", "Female 90%", "Race: other / not sure", "20-39 years 70%"] for k in range(1, count + 1)
    ]
    drawing = draw.draw_faces(photo, boxes, lines)
    scale = draw.canvas_scale(*size)
    scaled = [tuple(round(v * scale) for v in b) for b in boxes]
    style = draw.LabelStyle.for_width(drawing.image.shape[1])
    layout = draw.place_labels(photo.shape[1::-1], scaled, [style.block_size(t) for t in lines], style.gap)
    if drawing.labelled:  # only with few enough faces for each to have its own colour, and then cleanly
        assert count <= len(draw.BOX_COLORS)
        _clean(size, scaled, layout)
    else:  # numbers on the faces, never over another face nor another number
        badges = draw.number_badges(drawing.image.shape[1::-1], scaled, range(1, count + 1), style)
        for i, badge in enumerate(badges):
            assert not any(draw.intersects(badge, b) for j, b in enumerate(scaled) if j != i)
            assert not any(draw.intersects(badge, o) for j, o in enumerate(badges) if j != i)
        for k, (x, y, w, h) in enumerate(scaled, start=1):  # each box in its number's colour
            b, g, r = draw.box_color(k)
            assert tuple(drawing.image[y + h, x + w // 2]) == (r, g, b)


def test_faces_are_numbered_in_reading_order():
    # two rows of heads, not quite level, found largest first
    boxes = [(300, 210, 90, 90), (20, 40, 60, 60), (400, 30, 70, 70), (180, 60, 50, 50), (40, 230, 80, 80)]
    assert [boxes[i] for i in draw_order(boxes)] == [boxes[1], boxes[3], boxes[2], boxes[4], boxes[0]]
    found = [FacePrediction(b, None, 0.0, np.zeros((50, 50), np.uint8), {}) for b in boxes]
    assert [f.box for f in faces.shown_faces(found)] == [boxes[i] for i in (1, 3, 2, 4, 0)]
    assert [f.box for f in faces.shown_faces(found, largest_only=True)] == [boxes[0]]
    assert faces.shown_faces([], largest_only=True) == []


def draw_order(boxes):
    return faces.reading_order(boxes)


def test_every_face_of_a_small_crowd_has_its_own_colour_dark_enough_for_white_text():
    assert len(set(draw.BOX_COLORS)) == len(draw.BOX_COLORS) >= 10
    assert draw.box_color(1) == draw.box_color(len(draw.BOX_COLORS) + 1)
    for b, g, r in draw.BOX_COLORS:  # WCAG contrast with white of at least 3 (large text)
        lum = sum(w * ((c / 255) / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4)
                  for w, c in zip((0.2126, 0.7152, 0.0722), (r, g, b), strict=True))  # fmt: skip
        assert 1.05 / (lum + 0.05) >= 3, (b, g, r)
    assert draw.box_hex(1) == "#{2:02x}{1:02x}{0:02x}".format(*draw.BOX_COLORS[0])


@pytest.mark.parametrize("seed", range(5))
def test_random_layouts_never_cover_a_face(seed):
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(300, 1300)), int(rng.integers(300, 1300)))
    boxes = []
    for _ in range(int(rng.integers(1, 8))):
        side = int(rng.integers(20, min(size) // 2))
        box = (int(rng.integers(0, size[0] - side)), int(rng.integers(0, size[1] - side)), side, side)
        if not any(draw.intersects(box, b) for b in boxes):
            boxes.append(box)
    blocks = [(int(rng.integers(80, 400)), int(rng.integers(40, 150))) for _ in boxes]
    layout = draw.place_labels(size, boxes, blocks, gap=4)
    if layout is not None:
        assert [r[2:] for r in layout.rects] == blocks
        _clean(size, boxes, layout)


@pytest.mark.parametrize("photo_width", [200, 500, 800, 1000, 1280, 4000])
def test_label_text_is_legible_on_a_phone(photo_width):
    # a phone shows the drawn photo at most PHONE_PHOTO_PX wide (smaller photos at their own size)
    drawn_width = round(photo_width * draw.canvas_scale(photo_width, photo_width * 3 // 4))
    style = draw.LabelStyle.for_width(drawn_width)
    shown_cap = style.cap * min(1.0, draw.PHONE_PHOTO_PX / drawn_width)
    assert shown_cap >= draw.MIN_PHONE_CAP_PX or style.cap == draw.MIN_TEXT_PX


def test_text_scales_with_the_photo_and_stays_legible():
    assert draw.text_px(200) == draw.MIN_TEXT_PX and draw.text_px(1280) > draw.MIN_TEXT_PX
    small, big = draw.LabelStyle.for_width(400), draw.LabelStyle.for_width(1280)
    lines = ["1. Emotion: not sure", "Female 90%", "Race: other / not sure", "20-39 years 70%"]
    assert big.block_size(lines)[1] > small.block_size(lines)[1] >= 4 * draw.MIN_TEXT_PX
    # small photos are enlarged before drawing, big ones reduced: the text never ends up tiny beside the photo
    assert (
        draw.canvas_scale(400, 300) == 2.0
        and draw.canvas_scale(4000, 3000) == 0.32
        and draw.canvas_scale(1000, 500) == 1
    )
    assert draw.canvas_scale(200, 150) == draw.MAX_ENLARGE == 2.0  # a small photo: at most twice its size, not blurred


def _label_pixels(drawn: np.ndarray, photo_value: int) -> np.ndarray:
    """Pixels that are neither the plain photo nor the white band: boxes, labels and lines."""
    return (np.abs(drawn.astype(int) - photo_value).max(axis=2) > 8) & ~(drawn == 255).all(axis=2)


def test_draw_faces_leaves_the_face_uncovered_when_it_fills_the_photo():
    photo = np.full((900, 900, 3), 128, np.uint8)
    box = (40, 20, 840, 860)
    drawing = draw.draw_faces(photo, [box], [["1. Happy 87%", "Female 90%", "Asian 61%", "20-39 years 70%"]])
    drawn = drawing.image
    assert drawing.labelled and drawn.shape[1] == 900 and drawn.shape[0] > 900  # a band for the label under it
    x, y, w, h = box
    inside = drawn[y + 4 : y + h - 4, x + 4 : x + w - 4]
    assert (inside == 128).all(), "something was drawn over the face"
    assert (drawn[y, x + 10 : x + w - 10] != 128).any(axis=1).all()  # the box itself
    band = drawn[900:]
    assert (band != 255).any(axis=2).mean() > 0.05  # the label is in the band


def test_draw_faces_labels_small_faces_legibly_and_outside_them():
    photo = np.full((300, 500, 3), 128, np.uint8)  # a small group photo: enlarged to 800 wide
    boxes = [(30 + 120 * i, 100, 40, 40) for i in range(4)]
    lines = [[f"{k}. Happy 87%", "Female 90%", "African American 80%", "20-39 years 70%"] for k in range(1, 5)]
    drawing = draw.draw_faces(photo, boxes, lines)
    drawn = drawing.image
    assert drawn.shape[1] == 800 and drawing.labelled
    scale = 800 / 500
    for x, y, w, h in boxes:
        sx, sy, sw, sh = (round(v * scale) for v in (x, y, w, h))
        assert (drawn[sy + 4 : sy + sh - 4, sx + 4 : sx + sw - 4] == 128).all()
    # every face's label block is at least four lines of MIN_TEXT_PX text tall
    marked = _label_pixels(drawn, 128)
    assert marked.sum() > 4 * (4 * draw.MIN_TEXT_PX) * 100


def test_draw_faces_without_faces_and_other_formats():
    photo = np.full((300, 400, 3), 255, np.uint8)
    assert draw.draw_faces(photo, [], []).image.shape == (600, 800, 3)  # enlarged, nothing drawn
    assert (draw.draw_faces(photo, [], []).image == 255).all()
    big = draw.draw_faces(np.zeros((3000, 2000), np.uint8), [(1000, 1000, 600, 600)], [["x"]])
    assert big.image.shape[:2] == (1280, 853)
    assert draw.draw_faces(np.zeros((50, 60, 4), np.uint8), [], []).image.shape == (100, 120, 3)  # at most 2x


def test_a_crowd_table_lists_each_faces_answers_on_its_colour():
    verdicts = [
        answers.face_verdicts(_prediction(), MIN_CONFIDENCE),
        answers.face_verdicts(_unsure_emotion(), MIN_CONFIDENCE),
    ]
    styled = predict_view.answers_table(verdicts)
    frame = styled.data
    assert list(frame["Face"]) == [1, 2] and list(frame.columns[1:]) == [display_name(t) for t in TASK_NAMES]
    assert frame.loc[0, "Emotion"] == "Happy" and frame.loc[1, "Emotion"].startswith("Not sure")
    html = styled.to_html()
    assert f"background-color: {draw.box_hex(2)}" in html
    assert list(predict_view.answers_table(verdicts, [4, 7]).data["Face"]) == [4, 7]
    assert "12 faces" in predict_view.crowd_caption(12)


# --- charts and downloads ---------------------------------------------------------------------------------------


def test_probability_figure_names_for_people_and_hides_untaught_classes():
    p = _prediction()
    verdicts = answers.face_verdicts(p, MIN_CONFIDENCE)
    fig = predict_view.probability_figure("race", p.probabilities["race"], verdicts["race"], 0.55)
    bar = fig.data[0]
    assert list(bar.y) == ["Caucasian", "African American", "Asian", "Other"]
    assert (
        list(bar.marker.color) == [draw.MUTED, draw.ACCENT, draw.MUTED, draw.MUTED] and fig.layout.title.text == "Race"
    )
    gender = predict_view.probability_figure("gender", p.probabilities["gender"], verdicts["gender"])
    assert list(gender.data[0].y) == ["Male", "Female"]
    age = predict_view.probability_figure("age", p.probabilities["age"])
    assert list(age.data[0].y) == ["0-3 years", "4-19 years", "20-39 years", "40-69 years", "70+ years"]


def test_probability_figure_when_not_sure():
    p = _unsure_emotion()
    v = answers.face_verdicts(p, MIN_CONFIDENCE)["emotion"]
    fig = predict_view.probability_figure("emotion", p.probabilities["emotion"], v, 0.45)
    assert fig.layout.title.text == "Emotion: not sure"
    assert draw.ACCENT not in list(fig.data[0].marker.color)
    assert (
        fig.layout.shapes[0].x0 == 0.45 and fig.layout.xaxis.title.text == "dotted line: how sure it needed to be (45%)"
    )


def test_downloads_are_in_words_for_people():
    named = [("a.jpg", [_prediction(), _unsure_emotion()]), ("b.png", [])]
    table = predict_view.people_table(named, MIN_CONFIDENCE)
    assert list(table["Photo"]) == ["a.jpg", "a.jpg"] and list(table["Face"]) == [1, 2]
    assert list(table["Emotion"]) == ["Happy", "Not sure (Sad or Angry)"]
    assert list(table["Race"]) == ["African American", "Other / not sure (Caucasian or Asian)"]
    assert list(table["Age group"]) == ["20-39 years", "20-39 years"]
    assert table.loc[0, "Race: African American (%)"] == 80.0 and table.loc[0, "Left (px)"] == 40
    assert "Gender: Unsure (%)" not in table.columns
    assert not IDENTIFIER.search(table.to_csv(index=False))

    data = json.loads(predict_view.people_json(named, MIN_CONFIDENCE))
    assert data[0]["photo"] == "a.jpg" and data[1] == {"photo": "b.png", "faces": []}
    face = data[0]["faces"][1]
    assert face["face"] == 2 and face["position"] == {"left": 40, "top": 30, "width": 100, "height": 100}
    assert face["Emotion"]["answer"] == "Not sure (Sad or Angry)" and face["Emotion"]["sure"] is False
    assert face["Race"]["probabilities"] == {"Caucasian": 0.5, "African American": 0.1, "Asian": 0.4, "Other": 0.0}
    assert list(face["Gender"]["probabilities"]) == ["Male", "Female"]
    assert not IDENTIFIER.search(predict_view.people_json(named, MIN_CONFIDENCE))


def test_notes_explain_not_sure_and_race_in_plain_words():
    assert "three groups" in predict_view.RACE_NOTE and "Other / not sure" in predict_view.RACE_NOTE
    assert "African American" in predict_view.RACE_NOTE and "_" not in predict_view.RACE_NOTE
    assert '"Not sure"' in predict_view.NOT_SURE_NOTE


# --- the upload behind the page ---------------------------------------------------------------------------------


def test_upload_counts_every_face_and_uses_the_predictors_mirror_averaging(shared_data, tmp_path):
    """The page's analyse_upload goes through the Predictor (so a bundle's input.tta_flip applies) and reports how
    many faces were found when only the largest is shown."""
    import cv2

    from mtfer.core import bundles
    from mtfer.core.inference import Predictor
    from mtfer.core.model import build_model
    from mtfer.core.preprocess import PreprocessConfig
    from mtfer.media.uploads import analyse_upload

    metadata = {
        "tasks": {t: list(TASKS[t].classes) for t in TASK_NAMES},
        "input": {"size": 50, "tta_flip": True},
        "preprocessing": PreprocessConfig().to_dict(),
    }
    bundles.save_bundle(build_model("fast", TASK_NAMES), metadata, tmp_path / "bundle")
    predictor = Predictor(tmp_path / "bundle")
    assert predictor.flip

    chips = [p for p in sorted((shared_data / "utkface" / "UTKFace").iterdir()) if p.name.startswith("10_0_0_")][:2]
    big, small = (cv2.imread(str(c)) for c in chips)
    small = cv2.copyMakeBorder(cv2.resize(small, (140, 140)), 30, 30, 30, 30, cv2.BORDER_CONSTANT, value=(200,) * 3)
    canvas = cv2.copyMakeBorder(np.hstack([big, small]), 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(200,) * 3)
    data = cv2.imencode(".jpg", canvas)[1].tobytes()

    every = analyse_upload(predictor, "two.jpg", data)
    largest = analyse_upload(predictor, "two.jpg", data, largest_only=True)
    assert (len(every.faces), every.found) == (2, 2) and (len(largest.faces), largest.found) == (1, 2)
    assert predict_view.faces_found_caption(len(largest.faces), largest.found) == "2 faces found, showing the largest"
    face = largest.faces[0]
    mirrored = predictor.predict_faces(np.stack([face.aligned, face.aligned[:, ::-1]]))
    predictor.flip = False
    plain = predictor.predict_faces(np.stack([face.aligned, face.aligned[:, ::-1]]))
    for task in TASK_NAMES:
        shown = np.array(list(face.probabilities[task].values()))
        np.testing.assert_allclose(shown, mirrored[task][0], atol=1e-5)
        np.testing.assert_allclose(shown, plain[task].mean(axis=0), atol=1e-5)


@pytest.mark.parametrize("min_confidence", [0.95, 0.0])
def test_the_csv_gives_the_answer_the_page_shows(min_confidence):
    """One answer everywhere: the CSV's <task>_answer is the class when the page states it and "not sure" (race:
    "other / not sure") when the page says so, beside the raw top class and its probability."""
    from mtfer.media.tables import class_names, predictions_table

    limits = dict.fromkeys(TASK_NAMES, min_confidence)
    face = _prediction(emotion={"happy": 0.9, "neutral": 0.1})  # every top class below 0.95
    row = predictions_table([("photo.jpg", [face])], limits).iloc[0]
    page = predict_view.people_table([("photo.jpg", [face])], limits).iloc[0]
    for task in TASK_NAMES:
        top = max(face.probabilities[task], key=face.probabilities[task].get)
        assert row[task] == top  # the raw top class stays, with its probability
        assert class_names(list(row.index), task) == list(TASKS[task].classes)  # readers tell answers from classes
        shown = page[predict_view.display_name(task)]
        if min_confidence:
            assert row[f"{task}_answer"] == ("other / not sure" if task == "race" else "not sure")
            assert shown.lower().startswith(row[f"{task}_answer"])
        else:
            assert row[f"{task}_answer"] == top and shown == predict_view.display_name(task, top)
