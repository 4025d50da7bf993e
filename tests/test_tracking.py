"""Tracker: faces keep their ids while they move, new faces get new ids, old tracks end, probabilities steady."""

import numpy as np
import pytest

from mtfer.media.tracking import Tracker, iou


def test_iou_of_known_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_two_faces_keep_their_ids_while_moving_and_crossing_order():
    tracker = Tracker()
    a, b = tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)], None, 0.0)
    # next frame: both moved a little, and are given in the other order
    ids = tracker.update([(205, 3, 50, 50), (4, 2, 50, 50)], None, 0.2)
    assert ids == [b, a]
    assert a != b


def test_a_new_face_gets_a_new_id_and_a_lost_face_ends():
    tracker = Tracker(max_age_s=1.0)
    (a,) = tracker.update([(0, 0, 50, 50)], None, 0.0)
    (c,) = tracker.update([(300, 300, 40, 40)], None, 0.5)  # elsewhere: a new person
    assert c != a and set(tracker.tracks) == {a, c}
    tracker.update([(300, 302, 40, 40)], None, 1.4)
    assert tracker.update([(300, 300, 40, 40)], None, 2.0) == [c]  # a unseen for 2 s: gone
    assert set(tracker.tracks) == {c}
    (d,) = tracker.update([(0, 0, 50, 50)], None, 2.1)  # back where a was: a new track, ids never reused
    assert d not in (a, c)


def test_smoothing_damps_a_one_frame_flip_and_follows_a_lasting_change():
    happy, sad = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    tracker = Tracker(smoothing_s=0.5)
    box = (10, 10, 60, 60)
    (tid,) = tracker.update([box], [{"emotion": happy}], 0.0)
    tracker.update([box], [{"emotion": sad}], 0.1)  # one noisy frame
    assert tracker.tracks[tid].probabilities["emotion"].argmax() == 0
    for k in range(2, 20):  # the face really turned sad for 2 s
        tracker.update([box], [{"emotion": sad}], 0.1 * k)
    assert tracker.tracks[tid].probabilities["emotion"][1] > 0.95
    np.testing.assert_allclose(tracker.tracks[tid].probabilities["emotion"].sum(), 1.0, rtol=1e-5)


def test_no_smoothing_keeps_each_frame_as_it_is():
    tracker = Tracker(smoothing_s=0)
    (tid,) = tracker.update([(0, 0, 9, 9)], [{"emotion": np.array([1.0, 0.0])}], 0.0)
    tracker.update([(0, 0, 9, 9)], [{"emotion": np.array([0.0, 1.0])}], 0.04)
    np.testing.assert_array_equal(tracker.tracks[tid].probabilities["emotion"], [0.0, 1.0])


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="min_iou"):
        Tracker(min_iou=1.5)
    with pytest.raises(ValueError, match="2 boxes but 1"):
        Tracker().update([(0, 0, 1, 1), (5, 5, 1, 1)], [{}], 0.0)


def test_a_face_back_elsewhere_keeps_its_new_track_while_the_old_one_lives_on():
    """The face vanishes, comes back at once elsewhere (a new track), then moves back over where the old track was
    last seen: recently seen tracks are matched first, so it stays on the new track."""
    tracker = Tracker(max_age_s=1.0)
    (a,) = tracker.update([(100, 100, 100, 100)], None, 0.0)
    (b,) = tracker.update([(300, 100, 100, 100)], None, 0.2)  # no overlap with a: a new track, a still alive
    assert b != a
    for k, x in enumerate((250, 200, 150, 110), start=1):  # moving back over a's last place, a not yet expired
        assert tracker.update([(x, 100, 100, 100)], None, 0.2 + 0.1 * k) == [b]


def test_one_face_with_gaps_of_up_to_two_seconds_is_one_track():
    """30 s of one face drifting across the frame, lost for 1.5-2 s every few seconds (a turned head, a stalled
    stream): it has moved off its old box when it comes back, and is still the same person."""
    tracker = Tracker()
    seen: set[int] = set()
    t, x = 0.0, 100.0
    while t < 30:
        in_gap = (t % 5.0) >= 3.2  # seen 3.2 s, then lost 1.8 s
        if not in_gap:
            seen.update(tracker.update([(int(x), 120, 80, 80)], None, t))
        t += 0.1
        x += 2.0  # 20 px/s: 36 px (under half a face) during a gap
    assert len(seen) == 1


def test_three_people_crossing_are_three_tracks():
    """Three faces walk across each other's paths at different heights; one is lost for a second midway."""
    tracker = Tracker()
    seen: set[int] = set()
    for k in range(100):
        t = 0.1 * k
        boxes = [(20 + 6 * k, 50, 70, 70), (620 - 6 * k, 150, 70, 70), (300, 250 + k, 70, 70)]
        if 40 <= k < 50:
            boxes = boxes[:2]  # the third person is missed for 1 s
        ids = tracker.update(boxes, None, t)
        assert len(set(ids)) == len(ids)
        seen.update(ids)
    assert len(seen) == 3


def test_a_new_face_far_away_or_of_another_size_is_not_a_lost_one():
    tracker = Tracker()
    (a,) = tracker.update([(100, 100, 80, 80)], None, 0.0)
    (b,) = tracker.update([(400, 100, 80, 80)], None, 1.0)  # 3.75 face widths away: someone else
    (c,) = tracker.update([(120, 110, 200, 200)], None, 2.0)  # near a's place but 2.5x its size: someone nearer
    assert len({a, b, c}) == 3
