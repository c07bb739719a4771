"""Face framing: zoom-out keeps geometry aligned; the framer finds the box and the direction."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cephalometric.mmpose_plugins.transforms import RandomZoomOut
from cephalometric.model.framing_prior import FramingPrior, measure_facing, measure_prior
from cephalometric.prediction.framing import (
    GRID_FRACTIONS,
    FaceFramer,
    box_iou,
    grid_boxes,
    mirror_box,
    mirror_keypoints,
)

PRIOR = FramingPrior(offset=(0.05, -0.02), ratio=(1.5, 1.4))


def dots_image(points, size=(64, 80)):
    image = np.zeros((*size, 3), np.uint8)
    for x, y in np.round(points).astype(int):
        image[y, x] = 255
    return image


@pytest.mark.parametrize('seed', range(5))
def test_zoom_out_moves_image_keypoints_box_and_depth_together(seed):
    points = np.array([[10.0, 12.0], [50.0, 30.0], [70.0, 55.0]])
    image = dots_image(points)
    depth = image[..., 0].astype(np.float32) / 255    # a depth map that peaks at the landmarks
    results = {'img': image, 'img_shape': image.shape[:2], 'depth': depth,
               'keypoints': points[None].astype(np.float32),
               'bbox': np.array([[0, 0, 80, 64]], np.float32)}
    out = RandomZoomOut(prob=1.0, max_ratio=3.0, backgrounds=('plain',), seed=seed).transform(
        results)
    canvas_h, canvas_w = out['img'].shape[:2]
    assert canvas_w >= 80 and canvas_h >= 64 and out['img_shape'] == (canvas_h, canvas_w)
    np.testing.assert_array_equal(out['bbox'], [[0, 0, canvas_w, canvas_h]])
    for x, y in np.round(out['keypoints'][0]).astype(int):
        assert (out['img'][y, x] == 255).all()
        assert out['depth'][y, x] == pytest.approx(1.0)
    assert out['depth'].shape == (canvas_h, canvas_w)


def test_zoom_out_with_probability_zero_changes_nothing():
    image = dots_image([[5, 5]])
    results = {'img': image, 'keypoints': np.zeros((1, 1, 2), np.float32),
               'bbox': np.array([[0, 0, 80, 64]], np.float32)}
    out = RandomZoomOut(prob=0.0, seed=0).transform(dict(results))
    assert out['img'] is image


def test_measured_prior_rebuilds_the_training_box():
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(30, 70, (20, 19, 2))
    sizes = np.full((20, 2), 100.0)
    prior = measure_prior(keypoints, np.ones((20, 19), bool), sizes)
    boxes = np.array([prior.box(k) for k in keypoints])
    assert np.median(np.abs(boxes - [0, 0, 100, 100])) < 6   # within a few px of the crop


class FakeModel:
    """Stands in for a trained network: accurate when the box matches the training framing and
    the face looks the trained way, confident accordingly, and lost on an empty picture."""

    def __init__(self, photo, truth, blank=False):
        self.photo, self.truth, self.blank = photo, np.asarray(truth, np.float32), blank
        self.calls = 0

    def __call__(self, views, bboxes, batch_size=8):
        out = []
        for view, box in zip(views, bboxes):
            self.calls += 1
            flipped = not np.array_equal(view, self.photo)
            truth = mirror_keypoints(self.truth, view.shape[1]) if flipped else self.truth
            if self.blank:
                out.append(SimpleNamespace(keypoints=np.tile([box[0] + 1, box[1] + 1], (19, 1)),
                                           scores=np.full(19, 0.05)))
                continue
            ideal = PRIOR.box(truth)
            box = np.asarray(box, float)
            centre_miss = np.abs(box[:2] + box[2:] / 2 - ideal[:2] - ideal[2:] / 2)
            miss = (centre_miss + np.abs(box[2:] - ideal[2:])) / ideal[2:]
            # error shrinks with the framing error; a mirrored face is found less reliably
            error = 0.3 * miss * ideal[2:] + (3.0 if flipped else 0.0)
            score = 0.8 * np.exp(-miss.sum()) * (0.5 if flipped else 1.0)
            out.append(SimpleNamespace(keypoints=truth + error, scores=np.full(19, score)))
        return out


def wide_photo(seed=0, size=(300, 420)):
    rng = np.random.default_rng(seed)
    photo = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    truth = rng.uniform([150, 90], [260, 190], (19, 2))
    truth[0] = [150, 100]    # sella behind ...
    truth[1] = [250, 95]     # ... nasion: the face looks to the right
    return photo, truth


def test_framer_settles_on_the_training_box_of_a_small_face():
    photo, truth = wide_photo()
    prediction, framing = FaceFramer(FakeModel(photo, truth), PRIOR)(photo)
    assert framing.method == 'auto' and not framing.mirrored and framing.review_reason is None
    assert box_iou(framing.bbox, PRIOR.box(truth)) > 0.9
    assert np.abs(prediction.keypoints - truth).max() < 2.0
    assert 1 <= framing.iterations <= 5


def test_mirrored_photo_gives_mirrored_landmarks():
    photo, truth = wide_photo(1)
    mirrored_photo = np.ascontiguousarray(photo[:, ::-1])
    mirrored_truth = mirror_keypoints(truth, photo.shape[1])
    # The model was trained on faces looking right; this photograph shows the left side.
    model = FakeModel(photo, truth)
    framer = FaceFramer(model, PRIOR)
    prediction, framing = framer(mirrored_photo)
    assert framing.mirrored
    assert np.abs(prediction.keypoints - mirrored_truth).max() < 2.0
    assert framing.candidates[1] > framing.candidates[0]



class SidedFinder:
    """A framing model whose coarse pass on the whole photograph already shows the direction
    clearly (`lead`) or not; counts the views it is asked to predict."""

    def __init__(self, photo, truth, lead):
        self.model, self.photo, self.lead, self.views = FakeModel(photo, truth), photo, lead, 0

    def __call__(self, views, bboxes, batch_size=8):
        self.views += len(views)
        out = self.model(views, bboxes)
        for view, prediction in zip(views, out):    # the other side: `lead` less confident
            trained_side = np.array_equal(view, self.photo)
            prediction.scores = np.full(19, 0.9 if trained_side else 0.9 - self.lead)
        return out


@pytest.mark.parametrize('lead, refined_views', [(0.3, 1), (0.02, 2)])
def test_a_clear_coarse_lead_refines_one_direction_a_close_call_both(lead, refined_views):
    photo, truth = wide_photo(7)
    finder = SidedFinder(photo, truth, lead)
    prediction, framing = FaceFramer(finder, PRIOR)(photo)
    assert not framing.mirrored and np.abs(prediction.keypoints - truth).max() < 2.0
    # 2 views on the coarse pass, then the first refining pass on one or both, then one view a
    # pass until the box settles
    assert finder.views == 2 + refined_views + (framing.iterations - 1)


class Measurer:
    """Stands in for the landmark model: exact on a well-framed face of the trained side, lost
    elsewhere; records what it was asked."""

    def __init__(self, photo, truth):
        self.photo, self.truth, self.asked = photo, np.asarray(truth, np.float32), []

    def __call__(self, views, bboxes, batch_size=8):
        self.asked += list(zip(views, bboxes))
        out = []
        for view, box in zip(views, bboxes):
            trained_side = np.array_equal(view, self.photo)
            framed = box_iou(box, PRIOR.box(self.truth)) > 0.9
            keypoints = self.truth if trained_side and framed else np.zeros_like(self.truth)
            out.append(SimpleNamespace(keypoints=keypoints.copy(), scores=np.full(19, 0.9)))
        return out


@pytest.mark.parametrize('mirrored', [False, True])
def test_landmark_model_measures_the_box_the_framing_model_found(mirrored):
    photo, truth = wide_photo(3)
    measurer = Measurer(photo, truth)
    framer = FaceFramer(FakeModel(photo, truth), PRIOR, measurer=measurer)
    shown = np.ascontiguousarray(photo[:, ::-1]) if mirrored else photo
    prediction, framing = framer(shown)
    # one measuring pass, on the settled box of the trained side; its landmarks are reported
    assert len(measurer.asked) == 1 and np.array_equal(measurer.asked[0][0], photo)
    expected = mirror_keypoints(truth, photo.shape[1]) if mirrored else truth
    assert framing.mirrored == mirrored
    assert np.abs(prediction.keypoints - expected).max() < 1e-4   # FakeModel alone is off by px
    # the face check keeps the framing model's confidence
    assert framing.mean_score < 0.85 and framing.review_reason is None

# -- failure modes seen on real photographs (docs/inference.md, Framing) ---------------------------

class DistractorFinder:
    """A framing model that settles, confidently, on a face-like distractor beside the face
    (whatever box it is given), as the real one did on a few photographs."""

    def __init__(self, distractor):
        self.distractor = np.asarray(distractor, np.float32)

    def __call__(self, views, bboxes, batch_size=8):
        return [SimpleNamespace(keypoints=self.distractor.copy(), scores=np.full(19, 0.85))
                for _ in views]


class LandmarkModel:
    """The landmark model on a box: confident and in agreement on the face, unsure elsewhere."""

    def __init__(self, truth):
        self.truth, self.calls = np.asarray(truth, np.float32), 0

    def __call__(self, views, bboxes, batch_size=8):
        self.calls += len(views)
        out = []
        for box in bboxes:
            on_face = box_iou(box, PRIOR.box(self.truth)) > 0.5
            keypoints = self.truth.copy() if on_face else np.asarray(
                [box[0] + box[2] / 2, box[1] + box[3] / 2], np.float32) + np.linspace(
                -20, 20, 38).reshape(19, 2)
            out.append(SimpleNamespace(keypoints=keypoints,
                                       scores=np.full(19, 0.9 if on_face else 0.45)))
        return out


CHECK = {'landmark_score_floor': 0.7, 'disagreement_ceiling': 0.04, 'images': 30}


class CloseUpFinder:
    """A framing model that, like the real one on close-ups, locks onto a part of the face (the
    ear) when its box is much narrower than the face, and is accurate from a box near the
    training framing."""

    def __init__(self, photo, truth):
        self.view, self.truth = photo, np.asarray(truth, np.float32)
        self.ideal = PRIOR.box(self.truth)

    def __call__(self, views, bboxes, batch_size=8):
        out = []
        for view, box in zip(views, bboxes):
            flipped = not np.array_equal(view, self.view)
            ratio = box[2] / self.ideal[2]
            if flipped:
                out.append(SimpleNamespace(keypoints=self.truth + 40, scores=np.full(19, 0.3)))
            elif ratio < 0.85:   # zoomed into the ear: a tight, confident cluster there
                ear = self.truth[0] + np.linspace(-3, 3, 38).reshape(19, 2)
                out.append(SimpleNamespace(keypoints=ear, scores=np.full(19, 0.7)))
            else:
                out.append(SimpleNamespace(keypoints=self.truth.copy(), scores=np.full(19, 0.9)))
        return out


def close_up(seed=4):
    """A photograph whose face fills the frame and is cut at its edges: the training framing of
    its landmarks reaches past the photograph."""
    rng = np.random.default_rng(seed)
    photo = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    truth = rng.uniform([5, 10], [195, 190], (19, 2))
    return photo, truth


def test_a_close_up_filling_the_frame_is_framed_whole_not_on_the_ear():
    photo, truth = close_up()
    assert PRIOR.box(truth)[2] > photo.shape[1]    # the face reaches past the frame
    measurer = LandmarkModel(truth)
    framer = FaceFramer(CloseUpFinder(photo, truth), PRIOR, measurer=measurer, face_check=CHECK)
    prediction, framing = framer(photo)
    # the coarse pass's box and the search within the photograph end on the ear, which fails the
    # face check; from the photograph in a 1.5x canvas the face is found whole
    assert measurer.calls == 3
    assert not framing.mirrored and framing.review_reason is None
    assert np.abs(prediction.keypoints - truth).max() < 1e-4
    assert box_iou(framing.bbox, PRIOR.box(truth)) > 0.9
    # without the check (an older checkpoint) the ear is what it gets
    _, old = FaceFramer(CloseUpFinder(photo, truth), PRIOR, measurer=LandmarkModel(truth))(photo)
    assert box_iou(old.bbox, PRIOR.box(truth)) < 0.5


class PickyFinder:
    """A framing model that, like the real one on photographs it was not trained for, finds the
    face only from a box near its training framing (centre within a fifth of the face box, side
    within 0.8-1.25x) and otherwise settles, fairly confidently, on a small cluster in the middle
    of whatever box it is given."""

    def __init__(self, photo, truth):
        self.view, self.truth = photo, np.asarray(truth, np.float32)
        self.ideal = PRIOR.box(self.truth)
        self.sides, self.mirrored_views = [], 0

    def __call__(self, views, bboxes, batch_size=8):
        out = []
        for view, box in zip(views, bboxes):
            box = np.asarray(box, float)
            self.sides.append(box[2])
            self.mirrored_views += not np.array_equal(view, self.view)
            centre_miss = np.abs(box[:2] + box[2:] / 2 - self.ideal[:2] - self.ideal[2:] / 2)
            ratio = box[2:] / self.ideal[2:]
            if not np.array_equal(view, self.view):
                out.append(SimpleNamespace(keypoints=self.truth + 40, scores=np.full(19, 0.3)))
            elif (centre_miss / self.ideal[2:]).max() < 0.2 and (abs(np.log(ratio)) < 0.22).all():
                out.append(SimpleNamespace(keypoints=self.truth.copy(), scores=np.full(19, 0.9)))
            else:
                middle = box[:2] + box[2:] / 2 + np.linspace(-10, 10, 38).reshape(19, 2)
                out.append(SimpleNamespace(keypoints=middle.astype(np.float32),
                                           scores=np.full(19, 0.6)))
        return out


def corner_face(width=300, height=300):
    """A photograph whose face fills about two thirds of it, in the lower right corner (the
    faces that real photographs' whole-photograph pass missed most)."""
    rng = np.random.default_rng(7)
    photo = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    shape = rng.uniform(0, 100, (19, 2))
    shape[0], shape[1] = [0, 10], [100, 0]     # sella behind nasion: facing right
    box = PRIOR.box(shape)
    side = 2 / 3 * max(width, height)
    truth = (shape - box[:2]) * (side / box[2:]) + [width - side, height - side]
    return photo, truth.astype(np.float32)


def test_a_face_off_centre_filling_two_thirds_of_the_photo_is_found_from_the_grid():
    photo, truth = corner_face()
    ideal = PRIOR.box(truth)
    assert np.allclose(ideal[:2] + ideal[2:], photo.shape[1::-1], atol=1)   # in the corner
    measurer, finder = LandmarkModel(truth), PickyFinder(photo, truth)
    prediction, framing = FaceFramer(finder, PRIOR, measurer=measurer, face_check=CHECK)(photo)
    # the photograph, its 1.5x canvas and every grid box of 1/2 or 1/3 of it end on a cluster
    # that fails the face check; the 2/3 box in the corner finds the face
    assert framing.review_reason is None and not framing.mirrored
    assert box_iou(framing.bbox, ideal) > 0.9
    assert np.abs(prediction.keypoints - truth).max() < 1e-4
    # found by the first stage of the grid: its 1/3 boxes were never tried
    assert np.isclose(finder.sides, 200).any() and not np.isclose(finder.sides, 100).any()


@pytest.mark.parametrize('size', [(160, 158), (300, 300), (640, 360), (90, 400), (257, 260)])
def test_grid_reaches_every_edge_in_steps_of_half_a_box(size):
    width, height = size
    boxes = np.array(grid_boxes(width, height))
    for fraction in GRID_FRACTIONS:
        side = fraction * max(width, height)
        same = boxes[np.isclose(boxes[:, 2], side)]
        assert len(same)
        for axis, extent in ((0, width), (1, height)):
            starts = np.unique(np.round(same[:, axis], 6))
            if side >= extent:    # a box wider than the photograph is centred on it
                assert np.allclose(starts, (extent - side) / 2)
                continue
            assert np.isclose(starts.min(), 0) and np.isclose(starts.max() + side, extent)
            assert (np.diff(starts) <= side / 2 + 1e-6).all()


def test_a_face_like_distractor_is_searched_again_then_flagged_and_gets_no_class():
    from cephalometric.landmarks import STANDARD_LANDMARKS
    from cephalometric.prediction.results import class_withheld_reason, image_record
    photo, truth = wide_photo(5)
    distractor = truth - truth.mean(0) + [60, 220]     # the same shape, lower left
    measurer = LandmarkModel(truth)
    prediction, framing = FaceFramer(DistractorFinder(distractor), PRIOR, measurer=measurer,
                                     face_check=CHECK)(photo)
    # every try (the photograph, the photograph in a 1.5x canvas, the grid's larger boxes, then
    # its smaller ones) ends on the distractor: flagged, with why
    assert measurer.calls == 4
    assert framing.review_reason and framing.review_reason.startswith('framing unsure')
    assert 'landmark confidence 0.45' in framing.review_reason
    prediction.names, prediction.bbox = list(STANDARD_LANDMARKS), tuple(framing.bbox)
    prediction.framing = framing.to_dict()
    size = photo.shape[1::-1]
    note = class_withheld_reason(prediction.names, prediction.scores, size, 0.3,
                                 framing.review_reason)   # as inference.py asks
    record = image_record('photo.png', prediction, {'ANB': 2.0, 'skeletal_class': 1},
                          score_threshold=0.3, size=size, class_note=note)
    assert 'skeletal_class' not in record['measurements']
    assert 'framing unsure' in record['skeletal_class_note']
    assert all(landmark['review'] for landmark in record['landmarks'])


def test_without_a_face_check_the_distractor_passes_silently():
    """What older checkpoints (no face check stored) still do: the reason the check exists."""
    photo, truth = wide_photo(5)
    distractor = truth - truth.mean(0) + [60, 220]
    _, framing = FaceFramer(DistractorFinder(distractor), PRIOR,
                            measurer=LandmarkModel(truth))(photo)
    assert framing.review_reason is None


def test_models_that_disagree_on_a_confident_face_are_flagged():
    photo, truth = wide_photo(6)
    finder = FakeModel(photo, truth)
    shifted = SimpleNamespace(truth=truth)

    def measurer(views, bboxes, batch_size=8):   # confident, but 10% of the box away
        return [SimpleNamespace(keypoints=shifted.truth + [0.1 * box[2], 0],
                                scores=np.full(19, 0.9)) for box in bboxes]
    _, framing = FaceFramer(finder, PRIOR, measurer=measurer, face_check=CHECK)(photo)
    assert framing.review_reason and 'apart' in framing.review_reason
    assert framing.disagreement == pytest.approx(0.1, abs=0.02)


def test_a_face_that_passes_the_check_is_measured_once_and_not_flagged():
    photo, truth = wide_photo(3)
    measurer = Measurer(photo, truth)
    _, framing = FaceFramer(FakeModel(photo, truth), PRIOR, measurer=measurer,
                            face_check={**CHECK, 'landmark_score_floor': 0.5})(photo)
    assert framing.review_reason is None and len(measurer.asked) == 1
    assert framing.disagreement < 0.04


class CountingFinder:
    """A framing model that finds the face (`offset` px off) from any box on the trained side, and
    is unsure on the other; counts the views it predicts."""

    def __init__(self, photo, truth, offset=1.0):
        self.photo, self.truth, self.offset, self.views = photo, np.asarray(truth), offset, 0

    def __call__(self, views, bboxes, batch_size=8):
        self.views += len(views)
        return [SimpleNamespace(keypoints=(self.truth + self.offset).astype(np.float32),
                                scores=np.full(19, 0.9 if np.array_equal(v, self.photo) else 0.4))
                for v in views]


def test_a_face_the_landmark_model_confirms_takes_the_short_way():
    photo, truth = wide_photo(8)
    finder, measurer = CountingFinder(photo, truth), LandmarkModel(truth)
    prediction, framing = FaceFramer(finder, PRIOR, measurer=measurer, face_check=CHECK)(photo)
    # the coarse pass (both directions) and one landmark-model pass: no refining passes
    assert finder.views == 2 and measurer.calls == 1
    assert framing.review_reason is None and not framing.mirrored and framing.iterations == 1
    assert np.abs(prediction.keypoints - truth).max() < 1e-4
    assert framing.candidates == [pytest.approx(0.9), pytest.approx(0.4)]
    # without the short way (benchmark.py's baseline) the framing model refines the box first
    finder = CountingFinder(photo, truth)
    FaceFramer(finder, PRIOR, measurer=LandmarkModel(truth), face_check=CHECK,
               short_way=False)(photo)
    assert finder.views > 2


@pytest.mark.parametrize('shown_mirrored', [False, True])
def test_a_face_above_every_mirrored_validation_face_is_not_looked_at_mirrored(shown_mirrored):
    photo, truth = wide_photo(8)
    shown = np.ascontiguousarray(photo[:, ::-1]) if shown_mirrored else photo
    finder, measurer = CountingFinder(photo, truth), LandmarkModel(truth)
    check = {**CHECK, 'mirrored_score_ceiling': 0.6}
    prediction, framing = FaceFramer(finder, PRIOR, measurer=measurer, face_check=check)(shown)
    # the trained side scores 0.9, above the ceiling: one coarse view; the other side scores 0.4,
    # so the photograph is looked at mirrored too, and found
    assert finder.views == (2 if shown_mirrored else 1) and measurer.calls == 1
    assert framing.mirrored == shown_mirrored and framing.review_reason is None
    expected = mirror_keypoints(truth, photo.shape[1]) if shown_mirrored else truth
    assert np.abs(prediction.keypoints - expected).max() < 1e-4
    assert len(framing.candidates) == (2 if shown_mirrored else 1)


def test_a_failed_short_way_of_the_shown_side_is_not_measured_twice():
    photo, truth = wide_photo(8)
    calls = []

    def measurer(views, bboxes, batch_size=8):   # confident, but its face is 15% wider
        calls.append(len(views))
        centre = truth.mean(0)
        return [SimpleNamespace(keypoints=((truth - centre) * 1.15 + centre).astype(np.float32),
                                scores=np.full(19, 0.9)) for _ in views]
    check = {**CHECK, 'disagreement_ceiling': 1, 'mirrored_score_ceiling': 0.6}
    FaceFramer(CountingFinder(photo, truth), PRIOR, measurer=measurer, face_check=check)(photo)
    # the shown side's short way (1 landmark pass), then the full search's measurement (1): the
    # short way is not tried again after the mirrored coarse pass
    assert len(calls) == 2


def test_a_box_the_landmark_model_does_not_confirm_is_searched():
    photo, truth = wide_photo(8)

    def measurer(views, bboxes, batch_size=8):   # confident, but its face is 15% wider
        centre = truth.mean(0)
        return [SimpleNamespace(keypoints=((truth - centre) * 1.15 + centre).astype(np.float32),
                                scores=np.full(19, 0.9)) for _ in views]
    finder = CountingFinder(photo, truth)
    FaceFramer(finder, PRIOR, measurer=measurer, face_check={**CHECK, 'disagreement_ceiling': 1})(
        photo)
    assert finder.views > 2     # refining passes of the framing model followed


def test_the_face_check_is_what_validation_faces_gave():
    from cephalometric.evaluation.calibration import measure_face_check
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, (100, 19, 2))
    scores = np.linspace(0.6, 0.9, 100)
    measured = [SimpleNamespace(keypoints=t, scores=np.full(19, s), bbox=(0, 0, 100, 100))
                for t, s in zip(truth, scores)]
    offsets = np.linspace(0.5, 5.0, 100)       # px on a 100 px box
    found = [SimpleNamespace(keypoints=t + [o, 0]) for t, o in zip(truth, offsets)]
    mirrored = [SimpleNamespace(scores=np.full(19, s)) for s in np.linspace(0.1, 0.55, 100)]
    check = measure_face_check(measured, found, mirrored)
    assert check['mirrored_score_ceiling'] == pytest.approx(0.55)
    assert 'mirrored_score_ceiling' not in measure_face_check(measured, found)
    assert check['images'] == 100
    assert check['landmark_score_floor'] == pytest.approx(np.percentile(scores, 1))
    assert check['disagreement_ceiling'] == pytest.approx(np.percentile(offsets, 99) / 100)
    assert check['landmark_score_median'] == pytest.approx(0.75)
    assert check['disagreement_median'] == pytest.approx(np.median(offsets) / 100)


def borderline_measurer(truth, score, shift):
    """A landmark model that is `score` confident and `shift` of the box away from the framing
    model, wherever it looks."""
    def measurer(views, bboxes, batch_size=8):
        return [SimpleNamespace(keypoints=np.asarray(truth, np.float32) + [shift * box[2], 0],
                                scores=np.full(19, score)) for box in bboxes]
    return measurer


MEDIANS = {'landmark_score_median': 0.9, 'disagreement_median': 0.01}


@pytest.mark.parametrize('score, shift, flagged', [
    (0.72, 0.035, True),     # 0.1 + 0.125 of the way to the medians: near both limits at once
    (0.72, 0.012, False),    # near the confidence floor only
    (0.88, 0.035, False),    # near the disagreement ceiling only
])
def test_a_face_near_both_limits_of_the_face_check_at_once_is_flagged(score, shift, flagged):
    photo, truth = wide_photo(6)
    finder, measurer = FakeModel(photo, truth), borderline_measurer(truth, score, shift)
    _, framing = FaceFramer(finder, PRIOR, measurer=measurer, face_check={**CHECK, **MEDIANS})(
        photo)
    assert bool(framing.review_reason) == flagged
    if flagged:
        assert 'both near the limits' in framing.review_reason
    # a checkpoint calibrated before the medians were stored judges each limit alone
    _, framing = FaceFramer(FakeModel(photo, truth), PRIOR, measurer=measurer,
                            face_check=CHECK)(photo)
    assert framing.review_reason is None


def test_joint_margin_counts_the_way_from_each_limit_to_its_median():
    from cephalometric.prediction.framing import joint_margin
    check = {**CHECK, **MEDIANS}        # floor 0.7, median 0.9; ceiling 0.04, median 0.01
    assert joint_margin(0.7, 0.04, check) == pytest.approx(0.0)
    assert joint_margin(0.8, 0.025, check) == pytest.approx(1.0)
    assert joint_margin(0.9, 0.01, check) == pytest.approx(2.0)
    assert joint_margin(0.7, 0.04, CHECK) == float('inf')


class TiltedFace:
    """A framing or landmark model that, like one trained on crops turned at most about 15
    degrees, finds a face only in a view showing it within 15 degrees of upright and looking the
    trained way: there exactly and `score` confident (the landmark model `shift` of the box away
    from the framing model), elsewhere 15 px off and unsure. The photograph's face is turned
    `tilt` degrees and looks the trained way or (`trained_way` False) the other."""

    def __init__(self, photo, truth, tilt, score, shift=0.0, trained_way=True, depth=None):
        from cephalometric.prediction.framing import transform_points, turned_view
        self.views, self.score, self.shift = [], score, shift
        self.depths_seen = 0
        for degrees in (0.0, 30.0, -30.0):
            view, view_depth, matrix = turned_view(photo, depth, degrees)
            points, upright = transform_points(matrix, truth), abs(tilt + degrees) <= 15
            mirrored_depth = None if depth is None else view_depth[:, ::-1]
            self.views += [(view, view_depth, points, upright and trained_way),
                           (np.ascontiguousarray(view[:, ::-1]), mirrored_depth,
                            mirror_keypoints(points, view.shape[1]), upright and not trained_way)]

    def __call__(self, views, bboxes, batch_size=8, depths=None):
        out = []
        for index, (view, box) in enumerate(zip(views, bboxes)):
            view_depth, points, known = next((d, p, k) for v, d, p, k in self.views
                                             if v.shape == view.shape and np.array_equal(v, view))
            if depths is not None:   # an RGB-D model: the depth map turned with its photograph
                assert np.array_equal(depths[index], view_depth)
                self.depths_seen += 1
            found = points + (self.shift * box[2] if known else 15.0)
            out.append(SimpleNamespace(keypoints=found.astype(np.float32),
                                       scores=np.full(len(points), self.score if known else 0.3)))
        return out


def tilted_face(tilt=35.0):
    """A face in a busy photograph, turned `tilt` degrees counterclockwise about its centre."""
    photo, truth = wide_photo(7)
    centre = truth.mean(axis=0)
    turn = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), tilt, 1.0)
    return photo, (truth @ turn[:, :2].T + turn[:, 2]).astype(np.float32)


@pytest.mark.parametrize('score, shift, turned', [
    (0.9, 0.0, True),        # a clear face once turned: taken, turned back
    (0.78, 0.03, False),     # passes the face check turned, but not TILT_MARGIN inside it
])
def test_a_tilted_face_is_framed_in_a_turned_photograph(score, shift, turned):
    """A head thrown back further than training turned its crops fails the face check as shown
    (the framing failures on real photographs of people drinking or kissing); turned 30 degrees
    the other way it is a face the models know, and its landmarks come back in the photograph's
    pixels."""
    photo, truth = tilted_face(35.0)
    check = {**CHECK, **MEDIANS}
    finder = TiltedFace(photo, truth, 35.0, 0.9)
    measurer = TiltedFace(photo, truth, 35.0, score, shift)
    prediction, framing = FaceFramer(finder, PRIOR, measurer=measurer, face_check=check)(photo)
    if not turned:
        assert framing.review_reason and framing.rotation == 0.0
        return
    assert framing.review_reason is None and framing.rotation == -30.0
    assert not framing.mirrored
    assert np.abs(prediction.keypoints - truth).max() < 0.1
    x, y, w, h = framing.bbox
    ideal = PRIOR.box(truth)
    assert np.allclose([x + w / 2, y + h / 2], [ideal[0] + ideal[2] / 2, ideal[1] + ideal[3] / 2],
                       atol=0.2 * w)
    # without turning (or on a checkpoint calibrated before the medians), it stays flagged
    for framer in (FaceFramer(finder, PRIOR, measurer=measurer, face_check=check, tilt=False),
                   FaceFramer(finder, PRIOR, measurer=measurer, face_check=CHECK)):
        _, framing = framer(photo)
        assert framing.review_reason and framing.rotation == 0.0


def test_the_depth_map_is_turned_with_its_photograph():
    photo, truth = tilted_face(35.0)
    depth = np.random.default_rng(3).uniform(0.3, 1.0, photo.shape[:2]).astype(np.float32)
    finder, measurer = (TiltedFace(photo, truth, 35.0, 0.9, depth=depth) for _ in range(2))
    prediction, framing = FaceFramer(finder, PRIOR, measurer=measurer,
                                     face_check={**CHECK, **MEDIANS})(photo, depth)
    assert framing.rotation == -30.0 and framing.review_reason is None
    assert np.abs(prediction.keypoints - truth).max() < 0.1
    assert finder.depths_seen > 2 and measurer.depths_seen > 1


def test_a_tilted_face_looking_the_other_way_is_turned_and_mirrored():
    photo, truth = tilted_face(-35.0)
    # the photograph shows the other side: its face turned +35 degrees, looking the other way
    shown, shown_truth = (np.ascontiguousarray(photo[:, ::-1]),
                          mirror_keypoints(truth, photo.shape[1]))
    finder, measurer = (TiltedFace(shown, shown_truth, 35.0, 0.9, trained_way=False)
                        for _ in range(2))
    prediction, framing = FaceFramer(finder, PRIOR, measurer=measurer,
                                     face_check={**CHECK, **MEDIANS})(shown)
    assert framing.review_reason is None and framing.mirrored and framing.rotation == -30.0
    assert np.abs(prediction.keypoints - shown_truth).max() < 0.1


def test_blank_image_is_flagged():
    photo = np.zeros((200, 200, 3), np.uint8)
    _, framing = FaceFramer(FakeModel(photo, np.zeros((19, 2)), blank=True), PRIOR)(photo)
    assert framing.review_reason and 'no face' in framing.review_reason


def test_tiny_face_is_flagged():
    photo, truth = wide_photo(2)
    truth = (truth - truth.min(0)) * 0.15 + 100     # a face about 15 px wide
    _, framing = FaceFramer(FakeModel(photo, truth), PRIOR)(photo)
    assert framing.review_reason and 'only' in framing.review_reason


def test_prior_round_trips_and_refuses_nonsense():
    assert FramingPrior.from_dict(PRIOR.to_dict()) == FramingPrior(
        tuple(PRIOR.offset), tuple(PRIOR.ratio))
    with pytest.raises(ValueError):
        FramingPrior.from_dict({'offset': [0, 0], 'ratio': [0, 1]})
    with pytest.raises(ValueError):
        FramingPrior.from_dict({'offset': [float('nan'), 0], 'ratio': [1, 1]})


# -- a framing model trained on both directions ------------------------------------------------

class BothSidesFinder:
    """A framing model trained with flips: finds the face (`offset` px off) whichever way it
    looks, from any box; counts the views it predicts and records whether any was mirrored."""

    def __init__(self, shown, shown_truth, offset=1.0):
        self.shown, self.truth, self.offset = shown, np.asarray(shown_truth), offset
        self.views, self.mirrored_views = 0, 0

    def __call__(self, views, bboxes, batch_size=8):
        self.views += len(views)
        self.mirrored_views += sum(not np.array_equal(v, self.shown) for v in views)
        return [SimpleNamespace(keypoints=(self.truth + self.offset).astype(np.float32),
                                scores=np.full(19, 0.9)) for _ in views]


def test_facing_tells_a_mirrored_face_from_the_trained_side():
    rng = np.random.default_rng(0)
    faces = [wide_photo(seed)[1] for seed in range(10)]
    prior = FramingPrior(PRIOR.offset, PRIOR.ratio, measure_facing(np.array(faces),
                                                                   np.ones((10, 19), bool)))
    assert prior.facing[0] < 0 < prior.facing[1]      # sella behind, nasion in front
    for seed in range(10, 20):
        _, truth = wide_photo(seed)
        noisy = truth + rng.normal(0, 3, truth.shape)
        assert not prior.mirrored(noisy) and prior.mirrored(mirror_keypoints(noisy, 420))
    assert FramingPrior.from_dict(prior.to_dict()) == prior
    with pytest.raises(ValueError):
        FramingPrior.from_dict({**PRIOR.to_dict(), 'facing': [0.0] * 19})


@pytest.mark.parametrize('shown_mirrored', [False, True])
def test_a_framing_model_of_both_directions_frames_in_one_pass_as_shown(shown_mirrored):
    photo, truth = wide_photo(8)
    width = photo.shape[1]
    prior = FramingPrior(PRIOR.offset, PRIOR.ratio, measure_facing(truth[None], np.ones((1, 19),
                                                                                         bool)))
    shown = np.ascontiguousarray(photo[:, ::-1]) if shown_mirrored else photo
    expected = mirror_keypoints(truth, width) if shown_mirrored else truth
    finder, measurer = BothSidesFinder(shown, expected), Measurer(photo, truth)
    prediction, framing = FaceFramer(finder, prior, measurer=measurer, face_check=CHECK)(shown)
    # one coarse pass on the photograph as shown, whichever way it looks, then one landmark pass
    # in the direction its landmarks show (the trained side: the photo itself or its mirror)
    assert finder.views == 1 and finder.mirrored_views == 0
    assert len(measurer.asked) == 1 and np.array_equal(measurer.asked[0][0], photo)
    assert box_iou(measurer.asked[0][1], PRIOR.box(truth)) > 0.9
    assert framing.mirrored == shown_mirrored and framing.review_reason is None
    assert np.abs(prediction.keypoints - expected).max() < 1e-4
    trained_box = PRIOR.box(truth)       # the training crop's box, mirrored with the face
    assert box_iou(framing.bbox, mirror_box(trained_box, width) if shown_mirrored
                   else trained_box) > 0.9
    # a framing model of one direction looks at the mirrored photograph too
    finder = BothSidesFinder(shown, expected)
    FaceFramer(finder, PRIOR, measurer=Measurer(photo, truth), face_check=CHECK)(shown)
    assert finder.mirrored_views >= 1


def test_a_framing_model_of_both_directions_searches_the_grid_as_shown_only():
    photo, truth = corner_face()
    prior = FramingPrior(PRIOR.offset, PRIOR.ratio, measure_facing(truth[None], np.ones((1, 19),
                                                                                         bool)))
    finder, measurer = PickyFinder(photo, truth), LandmarkModel(truth)
    prediction, framing = FaceFramer(finder, prior, measurer=measurer, face_check=CHECK)(photo)
    assert framing.review_reason is None and not framing.mirrored
    assert np.abs(prediction.keypoints - truth).max() < 1e-4
    assert finder.mirrored_views == 0 and np.isclose(finder.sides, 200).any()


# -- with a model that has learned (the shared learned_run fixture) -------------------------------

def test_learned_model_recognises_the_other_side(learned_run):
    """A mirrored photograph gives the mirrored landmarks (far better than `--bbox full`), and
    framing a crop costs nothing. The shared learned model's framing model has only 2 epochs (the
    fixture must be fast), so finding small faces in wide photographs is tested with the stand-in
    models above and measured on the demo model in the README (evaluate.py --robustness)."""
    from cephalometric.data.images import read_rgb
    from cephalometric.data.reader import load_split
    from cephalometric.evaluation.robustness import make_variant
    from cephalometric.prediction.predictor import LandmarkPredictor

    prepared, work_dir = learned_run
    predictor = LandmarkPredictor(str(work_dir / 'best_MRE.pth'), device='cpu')
    assert predictor.settings['framing_prior']['ratio'][0] > 1   # measured on the training boxes
    assert predictor.framing_network is not None                  # trained after the landmarks
    split = load_split(str(prepared), 'val')
    rng = np.random.default_rng(0)
    errors = {key: [] for key in ('crop auto', 'crop full', 'mirrored auto', 'mirrored full')}
    mirrored_flags = []
    for path, truth in list(zip(split.image_paths, split.keypoints))[:6]:
        image = read_rgb(path)
        cases = {'crop': (image, truth),
                 'mirrored': make_variant(image, truth, 1.0, None, rng, mirrored=True)}
        for case, (photo, photo_truth) in cases.items():
            for mode in ('auto', 'full'):
                prediction = predictor.predict([photo], mode)[0]
                assert prediction.framing['method'] == mode
                error = np.nanmean(np.linalg.norm(prediction.keypoints - photo_truth, axis=1))
                errors[f'{case} {mode}'].append(error)
                if case == 'mirrored' and mode == 'auto':
                    mirrored_flags.append(prediction.framing['mirrored'])
    mean = {key: float(np.mean(values)) for key, values in errors.items()}
    print(', '.join(f'{key} {value:.2f} px' for key, value in mean.items()))
    assert mean['mirrored auto'] < 0.5 * mean['mirrored full']
    assert mean['mirrored auto'] < 1.1 * mean['crop auto']
    assert sum(mirrored_flags) >= len(mirrored_flags) - 1    # the other side was recognised
    assert mean['crop auto'] < 1.5 * mean['crop full']


def test_given_box_and_whole_image_overrides(learned_run, tmp_path):
    """--bbox full and --bbox x,y,w,h bypass framing; a blank picture gets no class."""
    import json

    from cephalometric.errors import run_cli
    from inference import main

    prepared, work_dir = learned_run
    photo = next((prepared / 'images').iterdir())
    blank = tmp_path / 'blank.png'
    import cv2
    cv2.imwrite(str(blank), np.full((200, 300, 3), 128, np.uint8))
    records = {}
    for name, path, bbox in (('full', photo, 'full'), ('given', photo, '10,10,100,120'),
                             ('auto', photo, 'auto'), ('blank', blank, 'auto')):
        out = tmp_path / f'{name}.json'
        assert run_cli(main, ['--checkpoint', str(work_dir / 'best_MRE.pth'), '--img-path',
                              str(path), '--bbox', bbox, '--json', str(out), '--no-draw',
                              '--device', 'cpu']) == 0
        records[name] = json.loads(out.read_text())
    height, width = cv2.imread(str(photo)).shape[:2]
    assert records['full']['framing']['method'] == 'full'
    assert records['full']['bbox'] == [0, 0, width, height]
    assert records['given']['framing']['method'] == 'bbox'
    assert records['given']['bbox'] == [10, 10, 100, 120]
    assert records['auto']['framing']['method'] == 'auto'
    blank_record = records['blank']
    assert blank_record['framing']['review_reason'].startswith('no face found')
    assert all(landmark['review'] for landmark in blank_record['landmarks'])
    assert 'skeletal_class' not in blank_record['measurements']
    assert 'no face found' in blank_record['skeletal_class_note']


def test_a_mismatched_facing_is_refused():
    prior = FramingPrior(PRIOR.offset, PRIOR.ratio, (0.1, -0.1))
    with pytest.raises(ValueError, match='knows 2 landmarks'):
        prior.mirrored(np.zeros((19, 2)))


def test_the_framing_models_facing_is_stored_and_dropped_with_it(tmp_path):
    """A framing model of both directions stores `facing`; one of one direction, attached again
    (a resumed run without flips), drops it; a facing of the wrong length is refused."""
    import benchmark
    from cephalometric.errors import UserError
    from cephalometric.model.checkpoint import (
        attach_framing_model,
        load_checkpoint_file,
        load_published,
        write_published_checkpoint,
    )
    from cephalometric.prediction.predictor import LandmarkPredictor
    plain = benchmark.random_checkpoint(str(tmp_path / 'plain.pth'), 64)
    settings = LandmarkPredictor(plain, device='cpu').settings
    data = load_checkpoint_file(plain)
    path = str(tmp_path / 'best_MRE.pth')
    write_published_checkpoint(path, dict(data['meta'], inference=dict(
        settings, framing_prior=PRIOR.to_dict())), data['state_dict'])
    count = len(settings['landmark_names'])
    facing = list(np.linspace(-0.4, 0.4, count))
    attach_framing_model(path, data['state_dict'], {'epochs': 1}, facing)
    prior = load_published(path).settings['framing_prior']
    assert prior['facing'] == pytest.approx(facing) and prior['ratio'] == pytest.approx(PRIOR.ratio)
    attach_framing_model(path, data['state_dict'], {'epochs': 1})
    assert 'facing' not in load_published(path).settings['framing_prior']
    with pytest.raises(UserError, match='facing must be'):
        attach_framing_model(path, data['state_dict'], {'epochs': 1}, facing[:-1])
