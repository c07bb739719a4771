"""Find the face region and the facing direction of a photograph before measuring it.

The model is trained on tight face crops that all look the same way; a clinic's photograph shows
the face smaller, anywhere in the frame, and sometimes from the other side. `FaceFramer` makes any
such photograph look like a training crop:

1. a coarse pass on the whole image (the training augmentation `RandomZoomOut` taught the framing
   model to find a small face in a wide frame);
2. a box around the predicted landmarks with the padding the training crops had (the
   `FramingPrior`, measured on the training annotations and stored in the checkpoint);
3. a refining pass on that box, repeated until the box settles;
4. the same on the mirrored image; the more confident direction is kept and its landmarks are
   mapped back, so a photograph of the other side gives mirrored landmarks and the same angles.
   When the coarse pass already shows one direction clearly more confident (DIRECTION_MARGIN),
   only that one is refined; a close call refines both once and compares them. A framing model
   trained on both directions (the prior's `facing`) skips the mirrored passes: it looks at the
   photograph as shown, and its landmarks' geometry gives the direction (`FramingPrior.mirrored`)
   that the landmark model, which knows one, then measures in;
5. with the checkpoint's face check (what its validation faces gave the landmark model: its
   confidence, and its agreement with the framing model), a result that fails it is searched
   again from the photograph in a 1.5x canvas (a close-up whose face fills the frame), then from
   the most confident of a grid of smaller start boxes reaching every edge, larger boxes first
   (a face off centre or in a corner, or a small face in a busy frame); a result
   that passes, else the most confident one, is kept. Without a face check (older checkpoints)
   the grid is tried when the framing model's mean score is under RETRY_SCORE.

With a framing model (a copy of the network fine-tuned on zoomed-out crops, stored in the
checkpoint), steps 1-5 run on it, and the landmark model, trained on crops only, then measures the
settled box in the chosen direction: each network does the job it was trained for.

With the face check, most photographs take a short way instead of steps 2-5: the landmark model
measures the box around the coarse pass's landmarks (in the direction the coarse pass shows
clearly), and when its own landmarks frame nearly the same box (CONFIRMED_IOU) and the result
passes every check, that is the answer: the coarse pass and one landmark pass. Anything else gets
the full search: the short way only accepts a result that passes every check the search applies.
A photograph of the trained side whose coarse pass scores above every mirrored validation face
(the face check's `mirrored_score_ceiling`) is not looked at mirrored unless the short way fails.

A photograph in which no face is found (low confidence), whose face is too small to measure, or
whose framed face still fails the face check, is flagged for review with a reason; callers then
report no skeletal class.

Imports numpy and `landmarks` only; the predictor is passed in (any callable with
`predictor(images, bboxes=...)` returning objects with `.keypoints` (K, 2) and `.scores` (K,)).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from cephalometric.model.framing_prior import FramingPrior

# A face box narrower than this (pixels of the photograph) holds too little detail to measure.
MIN_FACE_PX = 48.0
# Mean landmark confidence below which no face is taken to be there (heatmap peak height). The
# demo's framing model scores faces 0.91-0.99 after framing, whatever the framing; blank walls,
# noise and a page of text 0.06-0.22 (a single network trained on both crops and zoomed-out crops
# scored them up to 0.57: framing zooms into them looking for a face, which lifts their scores).
MIN_FACE_SCORE = 0.6
# A face region whose pixels vary less than this (standard deviation, 0-255) is blank.
MIN_FACE_CONTRAST = 4.0
MAX_ITERATIONS = 5
SETTLED_IOU = 0.95   # the box has settled when successive boxes overlap this much
# Below this mean confidence after settling, framing also starts from a grid of smaller boxes and
# keeps the more confident result. A trained framing model scores a face it has framed 0.85-1.0;
# in a busy 3x-wider frame it can settle on a corner of clutter at 0.5-0.7, or lose the face at 0.1.
RETRY_SCORE = 0.8
# When the face found fails the face check, the search starts again with the photograph this much
# wider and higher (`enlarged_box`). On real profile photographs (the CFP check in
# docs/inference.md), close-ups searched within the photograph were framed on the ear or the chin.
ENLARGED_START = 1.5
# Sides of the grid's start boxes, as shares of the photograph's longer side, searched in stages
# until a result passes. On real profile photographs (the CFP check in docs/inference.md) the
# faces missed by the whole-photograph pass mostly filled about two thirds of it, off centre,
# often in a corner: 2/3 finds those, 1/2 and 1/3 smaller faces in wider frames. The 25 boxes of
# 1/3 (on a square photograph) are only tried when the 13 larger ones found nothing that passes.
GRID_STAGES = ((2 / 3, 1 / 2), (1 / 3,))
GRID_FRACTIONS = tuple(fraction for stage in GRID_STAGES for fraction in stage)
# A lead of the framing model's mean confidence on the coarse pass (whole photograph, as shown and
# mirrored) at which the direction is taken from it; under it both directions get a refining
# pass first.
DIRECTION_MARGIN = 0.1
# A face whose landmark confidence and framing/landmark disagreement both lie near the face
# check's limits is in doubt too: each margin is measured as the share of the way from the
# validation faces' limit (1st or 99th percentile) to their median, and the two together must
# reach this. Chosen on development photographs (the CFP check in docs/inference.md): the framing
# failures that passed the check sat just inside both limits at once.
JOINT_MARGIN = 0.5
# A face that fails every check as shown may be tilted further than the models were trained for
# (a head thrown back to drink, bent to kiss: the training crops turn at most 30 degrees, mostly
# under 15). The photograph is then turned by these angles (degrees, counterclockwise) and
# framed again, without the grid: a 30 degree turn brings tilts of about 15-45 degrees within
# the trained range. Larger turns are not tried: a clinic photographs heads near upright, and on
# the CFP photographs a 55 degree turn also framed hair as a face that passed every check.
TILT_DEGREES = (30.0, -30.0)
# A turned photograph is a guess the photograph did not offer, with more ways to pass the face
# check by chance, so its face must sit twice as far inside it (`joint_margin`). Chosen on
# development photographs (the CFP check in docs/inference.md): the right angle's faces reached
# 0.76-2.0, the wrong angles' at most 0.51.
TILT_MARGIN = 2 * JOINT_MARGIN
# The short way is taken when the box around the landmark model's landmarks overlaps the coarse
# pass's box this much: within the shifts and zooms the landmark model was trained with.
CONFIRMED_IOU = 0.9


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class Framing:
    """How the face region was found, as recorded in the JSON output."""
    method: str                      # 'auto', 'bbox' (given) or 'full' (whole image)
    bbox: list                       # [x, y, w, h] in pixels of the photograph
    mirrored: bool = False           # True: the face looked the other way than in training
    iterations: int = 0              # refining passes ('auto' only)
    mean_score: float = float('nan')
    review_reason: Optional[str] = None   # why the result needs a human look, else None
    candidates: list = field(default_factory=list)   # mean score per direction tried
    # With a framing model: mean distance between its landmarks and the landmark model's on the
    # settled box, as a share of the box width (the two agree on a face they both recognise).
    disagreement: float = float('nan')
    # Degrees the photograph was turned (counterclockwise) to frame a tilted face (TILT_DEGREES);
    # the face box is then `bbox` turned by as much about its centre.
    rotation: float = 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data['bbox'] = [round(float(v), 2) for v in self.bbox]
        for key in ('mean_score', 'disagreement'):
            value = getattr(self, key)
            data[key] = None if not np.isfinite(value) else round(float(value), 4)
        data['candidates'] = [round(float(v), 4) for v in self.candidates]
        return data


class Settled(NamedTuple):
    """One search's outcome: the prediction on the settled box (the landmark model's once
    measured), the box, the direction, the framing model's mean score, the refining passes, the
    score per direction, and the framing/landmark disagreement (NaN until measured)."""
    prediction: Any
    box: list
    flipped: bool
    mean_score: float
    iterations: int
    candidates: list
    disagreement: float = float('nan')


def keep_in_view(box: Sequence[float], width: int, height: int) -> list:
    """The box with its centre moved into the image: lost predictions must not wander off."""
    x, y, w, h = (float(v) for v in box)
    cx = min(max(x + w / 2, 0.0), float(width))
    cy = min(max(y + h / 2, 0.0), float(height))
    w, h = min(w, 2.0 * width), min(h, 2.0 * height)   # a face box never needs more
    return [cx - w / 2, cy - h / 2, w, h]


def mirror_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Landmarks found on a horizontally flipped image, in the unflipped image's pixels."""
    mirrored = np.array(keypoints, np.float32, copy=True)
    mirrored[..., 0] = (width - 1) - mirrored[..., 0]
    return mirrored


def mirror_box(box: Sequence[float], width: int) -> list:
    x, y, w, h = box
    return [float(width - x - w), float(y), float(w), float(h)]


class FaceFramer:
    """Predict landmarks with an automatically found face box, either facing direction.

    Args:
        predictor: LandmarkPredictor-like callable that finds the face (the framing model).
        prior: the checkpoint's FramingPrior.
        measurer: LandmarkPredictor-like callable that predicts the landmarks reported, on the
            box found (the landmark model); None: the predictor's own last pass.
        mirror: also try the mirrored photograph and keep the more confident direction.
        min_face_px, min_face_score: below these the result is flagged for review.
        face_check: the checkpoint's `face_check` (what its validation faces gave; see
            `evaluation.calibration.measure_face_check`): with a measurer, a settled face below
            it is searched again and, if it stays below, flagged with the reason.
        short_way: with the face check, take the short way where it holds (False: always the
            full search, as before it existed; benchmark.py's baseline).
        tilt: with the face check's medians, frame a face that fails it again in turned
            photographs (TILT_DEGREES).
    """

    def __init__(self, predictor, prior: FramingPrior, mirror: bool = True,
                 max_iterations: int = MAX_ITERATIONS, min_face_px: float = MIN_FACE_PX,
                 min_face_score: float = MIN_FACE_SCORE, measurer=None,
                 face_check: Optional[dict] = None, short_way: bool = True, tilt: bool = True):
        self.predictor, self.prior, self.mirror, self.tilt = predictor, prior, mirror, tilt
        self.measurer, self.face_check, self.short_way = measurer, face_check, short_way
        self.max_iterations = max_iterations
        self.min_face_px, self.min_face_score = min_face_px, min_face_score

    def __call__(self, image: np.ndarray, depth: Optional[np.ndarray] = None):
        """(prediction in the photograph's pixels, Framing); `depth` for RGB-D models."""
        prediction, framing = self._framed(image, depth)
        if framing.review_reason is not None and self.tilts:
            tilted = self._tilted(image, depth)
            if tilted is not None:
                prediction, framing = tilted
        return prediction, framing

    @property
    def tilts(self) -> bool:
        """Whether a face that fails the face check is looked for in turned photographs: it
        needs the face check with its medians (TILT_MARGIN is a joint margin)."""
        return (self.tilt and self.checked
                and np.isfinite(joint_margin(1.0, 0.0, self.face_check)))

    def _tilted(self, image: np.ndarray, depth: Optional[np.ndarray]):
        """The photograph turned by each of TILT_DEGREES and framed again (no grid): the face
        that passes the face check furthest inside, at least TILT_MARGIN, with its landmarks
        and box turned back into the photograph; None when no angle gives one."""
        best, best_margin = None, TILT_MARGIN
        for degrees in TILT_DEGREES:
            view, view_depth, matrix = turned_view(image, depth, degrees)
            prediction, framing = self._framed(view, view_depth, retries=False)
            if framing.review_reason is not None:
                continue
            margin = joint_margin(float(np.nanmean(prediction.scores)), framing.disagreement,
                                  self.face_check)
            if margin >= best_margin:
                best, best_margin = (prediction, framing, matrix, degrees), margin
        if best is None:
            return None
        prediction, framing, matrix, degrees = best
        back = cv2.invertAffineTransform(matrix)
        prediction.keypoints = transform_points(back, prediction.keypoints)
        framing.bbox, framing.rotation = turned_box(back, framing.bbox), degrees
        if hasattr(prediction, 'bbox'):
            prediction.bbox = tuple(framing.bbox)
        return prediction, framing

    def _framed(self, image: np.ndarray, depth: Optional[np.ndarray], retries: bool = True):
        """The photograph framed as shown (steps 1-5); `retries`: with the 1.5x canvas and the
        grid when the face check fails."""
        height, width = image.shape[:2]
        views = [image] + ([np.ascontiguousarray(image[:, ::-1])] if self.mirror else [])
        depths = None
        if depth is not None:    # the depth map is mirrored with its photograph
            depth = np.asarray(depth)
            depths = [depth] + ([np.ascontiguousarray(depth[:, ::-1])] if self.mirror else [])
        # With the face check every settled box is measured (the check needs the landmark
        # model's view of it); without, only the one kept.
        checked, short = self.checked, self.checked and self.short_way
        full = [0.0, 0.0, float(width), float(height)]
        ceiling = self.face_check.get('mirrored_score_ceiling') if short else None
        result, shown_tried = None, False
        if self.both_sides:
            # The framing model knows both directions: one coarse pass, as shown, tells both the
            # box and the direction (`_measured`).
            coarse = self._predict(views[:1], None if depths is None else depths[:1], [full])
        elif ceiling is not None and len(views) > 1:
            coarse = self._predict(views[:1], None if depths is None else depths[:1], [full])
            if float(np.mean(coarse[0].scores)) > ceiling:
                # No mirrored validation face scored this high: the photograph shows the side
                # the models were trained on, and needs no mirrored look unless this fails.
                shown_tried = True
                result = self._confirmed(coarse, views[:1],
                                         None if depths is None else depths[:1], image)
            if result is None:
                coarse += self._predict(views[1:], None if depths is None else depths[1:],
                                        [full])
        else:
            coarse = self._predict(views, depths, [full] * len(views))
        if result is None and short and (self.both_sides or not (
                shown_tried and clear_lead([float(np.mean(p.scores)) for p in coarse]) == 0)):
            # (the shown direction's short way, already measured and failed, is not measured
            # again)
            result = self._confirmed(coarse, views, depths, image)
        confirmed = result is not None   # the short way took it only if every check passed
        if result is None:
            result = self._searched(coarse, views, depths, full, checked, retries)
        prediction, box, flipped, mean_score, iterations, candidates, disagreement = result
        if flipped:
            prediction.keypoints = mirror_keypoints(prediction.keypoints, width)
            box = mirror_box(box, width)
        if hasattr(prediction, 'bbox'):
            prediction.bbox = tuple(box)
        reason = None if confirmed else (
            review_reason(box, mean_score, self.min_face_px, self.min_face_score, image)
            or self._doubt(result))
        framing = Framing('auto', list(box), flipped, iterations, mean_score, reason, candidates,
                          disagreement)
        return prediction, framing

    def _confirmed(self, coarse, views, depths, image) -> Optional[Settled]:
        """The short way (a coarse pass, then one landmark-model pass): the direction the coarse
        pass shows clearly, the box around its landmarks, measured by the landmark model. Taken
        only when the landmark model's own landmarks frame nearly the same box (CONFIRMED_IOU)
        and the result passes every check; else None, and the full search runs."""
        scores = [float(np.mean(p.scores)) for p in coarse]
        best = 0 if self.both_sides else clear_lead(scores)
        if best is None:
            return None
        height, width = image.shape[:2]
        box = self._box(coarse[best].keypoints, width, height)
        result = self._measured(Settled(coarse[best], box, best == 1, scores[best], 1, scores),
                                views, depths)
        # (the landmark model's landmarks look the trained way, in its view's pixels)
        own_box = keep_in_view(self.prior.box(result.prediction.keypoints), width, height)
        shown_box = mirror_box(result.box, width) if result.flipped else result.box
        if (box_iou(result.box, own_box) >= CONFIRMED_IOU and self._doubt(result) is None
                and review_reason(shown_box, scores[best], self.min_face_px,
                                  self.min_face_score, image) is None):
            return result
        return None

    def _searched(self, coarse, views, depths, full, checked, retries=True) -> Settled:
        """The full search from the coarse pass: refining passes until the box settles, then,
        when the face check fails and `retries`, again from a 1.5x canvas and from a grid of
        start boxes."""
        height, width = views[0].shape[:2]
        result = self._settle(views, depths, [full] * len(views), coarse)
        if checked:
            result = self._measured(result, views, depths)
            if retries and self._doubt(result) is not None:
                # A close-up whose face fills the frame: seen in a larger canvas, it looks like
                # a training crop (searching within the photograph framed the ear or the chin).
                start = enlarged_box(width, height)
                wider = self._measured(self._settle(views, depths, [start] * len(views)), views,
                                       depths)
                if self._preferred(wider, result):
                    result = wider
        for fractions in GRID_STAGES if retries else ():
            if not self._needs_retry(result):
                break
            # No face that passes the check (a face off centre, a small face in a busy frame, or a
            # region that only the framing model took for a face): start again from the best of a
            # grid of smaller boxes, once per direction, and keep the better of the two results.
            starts = grid_boxes(width, height, fractions)
            searched = views[:1] if self.both_sides else views
            retry = self._settle(views, depths, [self._best_start(view, starts, depths, i)
                                                 for i, view in enumerate(searched)])
            if checked:
                retry = self._measured(retry, views, depths)
            if self._preferred(retry, result):
                result = retry
        if not checked:
            result = self._measured(result, views, depths)
        return result

    @property
    def both_sides(self) -> bool:
        """Whether the framing model knows both directions (the prior's `facing` says so): it
        then looks at the photograph as shown only, and its landmarks' geometry gives the
        direction the landmark model measures in."""
        return self.mirror and self.measurer is not None and self.prior.facing is not None

    def _box(self, keypoints: np.ndarray, width: int, height: int) -> list:
        """The face box a training crop around these landmarks would have had, in view: with a
        framing model of both directions, for a face looking the way the landmarks show."""
        if self.both_sides and self.prior.mirrored(keypoints):
            return mirror_box(keep_in_view(self.prior.box(mirror_keypoints(keypoints, width)),
                                           width, height), width)
        return keep_in_view(self.prior.box(keypoints), width, height)

    @property
    def checked(self) -> bool:
        """Whether results are judged by the face check (it needs both it and a measurer)."""
        return bool(self.face_check) and self.measurer is not None

    def _measured(self, result: Settled, views, depths) -> Settled:
        """`_settle`'s result with the landmark model's prediction on the settled box, when there
        is one, and how far it lies from the framing model's (share of the box width)."""
        if self.measurer is None:
            return result
        if self.both_sides and not result.flipped and \
                self.prior.mirrored(result.prediction.keypoints):
            # a face looking the other way: the landmark model measures it mirrored
            width = views[0].shape[1]
            found = copy.copy(result.prediction)
            found.keypoints = mirror_keypoints(found.keypoints, width)
            result = result._replace(prediction=found, box=mirror_box(result.box, width),
                                     flipped=True)
        prediction, box = result.prediction, result.box
        index = int(result.flipped) if len(views) > 1 else 0
        extra = {} if depths is None else {'depths': [depths[index]]}
        measured = self.measurer([views[index]], bboxes=[box], batch_size=1, **extra)[0]
        disagreement = models_disagreement(measured.keypoints, prediction.keypoints, box[2])
        # The face check keeps the framing model's score (MIN_FACE_SCORE is calibrated on it);
        # the landmarks and their scores are the landmark model's.
        return result._replace(prediction=measured, disagreement=disagreement)

    def _needs_retry(self, result: Settled) -> bool:
        """With the checkpoint's face check: the result fails it; without: the framing model's
        own confidence is under RETRY_SCORE."""
        if not self.checked:
            return result.mean_score < RETRY_SCORE
        return self._doubt(result) is not None

    def _doubt(self, result: Settled) -> Optional[str]:
        """Why a settled result is not taken for a correctly framed face (None when it is, or
        when there is no face check to tell): `face_check_doubt` of the landmark model's
        confidence and its agreement with the framing model."""
        if not self.checked:
            return None
        return face_check_doubt(float(np.nanmean(result.prediction.scores)), result.disagreement,
                                self.face_check)

    def _preferred(self, retry: Settled, result: Settled) -> bool:
        """Whether the retried result replaces the first: with the face check, one that passes
        it, else the more confident landmark model; without, the more confident framing model."""
        if not self.checked:
            return retry.mean_score > result.mean_score
        retry_doubt, result_doubt = self._doubt(retry), self._doubt(result)
        if (retry_doubt is None) != (result_doubt is None):
            return retry_doubt is None
        return (float(np.nanmean(retry.prediction.scores))
                > float(np.nanmean(result.prediction.scores)))

    def _predict(self, views, depths, boxes):
        extra = {} if depths is None else {'depths': depths}
        return self.predictor(views, bboxes=boxes, batch_size=len(views), **extra)

    def _best_start(self, view, starts, depths, index):
        """The start box whose prediction is the most confident, for one view."""
        scores = []
        for begin in range(0, len(starts), 8):
            chunk = starts[begin:begin + 8]
            extra = None if depths is None else [depths[index]] * len(chunk)
            scores += [float(np.mean(p.scores))
                       for p in self._predict([view] * len(chunk), extra, chunk)]
        return starts[int(np.argmax(scores))]

    def _settle(self, views, depths, boxes, predictions=None) -> Settled:
        """Predict from `boxes` (unless given their `predictions`), then refine until the box
        settles; the better direction wins."""
        height, width = views[0].shape[:2]
        if self.both_sides:   # the framing model looks at the photograph as shown only
            views, depths, boxes = views[:1], None if depths is None else depths[:1], boxes[:1]
        if predictions is None:
            predictions = self._predict(views, depths, boxes)
        candidates, flipped, iterations = None, False, 0

        def keep(best):   # only the direction `best` is refined further
            return ([views[best]], None if depths is None else [depths[best]], [boxes[best]],
                    [predictions[best]], best == 1)
        if len(views) > 1:
            coarse = [float(np.mean(p.scores)) for p in predictions]
            best = clear_lead(coarse)
            if best is not None:
                # Both views show the same pixels, mirrored: a clear lead already tells the
                # direction, and only that one is refined (one pass less).
                candidates = coarse
                views, depths, boxes, predictions, flipped = keep(best)
        while iterations < self.max_iterations:
            new_boxes = [self._box(p.keypoints, width, height) for p in predictions]
            if iterations and all(box_iou(a, b) >= SETTLED_IOU for a, b in zip(boxes, new_boxes)):
                break
            boxes = new_boxes
            predictions = self._predict(views, depths, boxes)
            iterations += 1
            if candidates is None and len(views) > 1:
                # A close call after the coarse pass: both directions are refined once and
                # judged on comparable crops; only the more confident one is refined further.
                candidates = [float(np.mean(p.scores)) for p in predictions]
                views, depths, boxes, predictions, flipped = keep(int(np.argmax(candidates)))
        mean_score = float(np.mean(predictions[0].scores))
        return Settled(predictions[0], boxes[0], flipped, mean_score, iterations,
                       candidates or [mean_score])


def clear_lead(scores: Sequence[float]) -> Optional[int]:
    """The direction (0 as shown, 1 mirrored) whose mean confidence leads by DIRECTION_MARGIN or
    more, or the only one; None for a close call."""
    if len(scores) > 1 and abs(scores[0] - scores[1]) < DIRECTION_MARGIN:
        return None
    return int(np.argmax(scores))


def models_disagreement(measured, found, box_width: float) -> float:
    """The mean distance between the landmark model's landmarks (`measured`) and the framing
    model's (`found`) on one face box, as a share of its width."""
    return float(np.nanmean(np.linalg.norm(np.asarray(measured, np.float64)
                                           - np.asarray(found, np.float64), axis=1))) / box_width


def face_check_doubt(score: float, disagreement: float, check: dict) -> Optional[str]:
    """Why a face box is not taken for a correctly framed face, or None: the landmark model's mean
    confidence `score` on it and its `disagreement` with the framing model (mean landmark
    distance / box width), against what the checkpoint's validation faces gave (`check`)."""
    if not score >= check['landmark_score_floor']:
        return (f'framing unsure: landmark confidence {score:.2f} is below '
                f'{check["landmark_score_floor"]:.2f}, the least its validation faces gave; '
                'check the face, or give its box with --bbox')
    if not disagreement <= check['disagreement_ceiling']:
        return (f'framing unsure: the framing and landmark models place the landmarks '
                f'{100 * disagreement:.0f}% of the face box apart (validation faces: up to '
                f'{100 * check["disagreement_ceiling"]:.0f}%); check the face, or give its '
                'box with --bbox')
    if joint_margin(score, disagreement, check) < JOINT_MARGIN:
        return (f'framing unsure: landmark confidence {score:.2f} and the models\' '
                f'disagreement {100 * disagreement:.1f}% of the face box are both near the '
                'limits of its validation faces; check the face, or give its box with --bbox')
    return None


def joint_margin(score: float, disagreement: float, check: dict) -> float:
    """How far a face lies inside the face check on both counts together: the landmark model's
    confidence above its floor plus the disagreement below its ceiling, each as a share of the way
    from that limit to the validation faces' median (inf without the medians: older checkpoints)."""
    if check.get('landmark_score_median') is None or check.get('disagreement_median') is None:
        return float('inf')
    score_room = check['landmark_score_median'] - check['landmark_score_floor']
    disagreement_room = check['disagreement_ceiling'] - check['disagreement_median']
    if score_room <= 0 or disagreement_room <= 0:
        return float('inf')
    return ((score - check['landmark_score_floor']) / score_room
            + (check['disagreement_ceiling'] - disagreement) / disagreement_room)


def tilt_matrix(width: int, height: int, degrees: float):
    """(2x3 affine matrix, (width, height) of the canvas) that turns a photograph by `degrees`
    counterclockwise about its centre onto a canvas holding all of it."""
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    size = (int(np.ceil(width * cos + height * sin)), int(np.ceil(width * sin + height * cos)))
    matrix[:, 2] += (size[0] - width) / 2, (size[1] - height) / 2
    return matrix, size


def turned_view(image: np.ndarray, depth: Optional[np.ndarray], degrees: float):
    """(turned photograph, its turned depth map or None, the 2x3 matrix from the photograph's
    pixels to the view's): `tilt_matrix`'s turn, the depth map without blending across edges."""
    matrix, size = tilt_matrix(image.shape[1], image.shape[0], degrees)
    view = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR)
    view_depth = None if depth is None else cv2.warpAffine(np.asarray(depth), matrix, size,
                                                           flags=cv2.INTER_NEAREST)
    return view, view_depth, matrix


def transform_points(matrix: np.ndarray, points) -> np.ndarray:
    """(K, 2) points through a 2x3 affine matrix."""
    points = np.asarray(points, np.float64)
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def turned_box(matrix: np.ndarray, box: Sequence[float]) -> list:
    """The (x, y, w, h) box with its centre taken through `matrix` (a turn: the size stays)."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = transform_points(matrix, [[x + w / 2, y + h / 2]])[0]
    return [float(cx) - w / 2, float(cy) - h / 2, w, h]


def enlarged_box(width: int, height: int) -> list:
    """The whole photograph in a canvas ENLARGED_START times as wide and high: the second start
    box, so that a face filling the frame (a close-up cut at its edges) looks like a training
    crop."""
    margin_x, margin_y = (ENLARGED_START - 1) / 2 * width, (ENLARGED_START - 1) / 2 * height
    return [-margin_x, -margin_y, ENLARGED_START * width, ENLARGED_START * height]


def grid_boxes(width: int, height: int, fractions: Sequence[float] = GRID_FRACTIONS) -> list:
    """Square start boxes of `fractions` of the longer side, at most half a side apart, the
    first and last of each row and column touching the photograph's edges (centred across a side
    shorter than the box)."""
    side_max, boxes = max(width, height), []
    for fraction in fractions:
        side = side_max * fraction
        xs, ys = (np.linspace(side / 2, extent - side / 2,
                              int(np.ceil((extent - side) / (side / 2) - 1e-6)) + 1)
                  if extent > side else np.array([extent / 2]) for extent in (width, height))
        boxes += [[float(x - side / 2), float(y - side / 2), side, side] for y in ys for x in xs]
    return boxes


def region_contrast(image: np.ndarray, box: Sequence[float]) -> float:
    """Standard deviation of the photograph's pixels inside the box (0 for an empty overlap)."""
    x, y, w, h = box
    height, width = image.shape[:2]
    x0, y0 = int(max(np.floor(x), 0)), int(max(np.floor(y), 0))
    x1, y1 = int(min(np.ceil(x + w), width)), int(min(np.ceil(y + h), height))
    region = image[y0:y1, x0:x1]
    return float(region.std()) if region.size else 0.0


def review_reason(box: Sequence[float], mean_score: float, min_face_px: float = MIN_FACE_PX,
                  min_face_score: float = MIN_FACE_SCORE,
                  image: Optional[np.ndarray] = None) -> Optional[str]:
    """Why landmarks found in `box` need a human look before any measurement, or None."""
    if image is not None and region_contrast(image, box) < MIN_FACE_CONTRAST:
        return 'no face found (the face region is blank); check the photograph'
    if not np.isfinite(mean_score) or mean_score < min_face_score:
        return (f'no face found (mean landmark confidence {mean_score:.2f} < {min_face_score}); '
                'check that the photograph shows a profile')
    if min(box[2], box[3]) < min_face_px:
        return (f'the face region is only {min(box[2], box[3]):.0f} px; photograph the face '
                'closer or at a higher resolution')
    return None
