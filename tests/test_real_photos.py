"""The real-photograph check's own parts (cephalometric/evaluation/real_photos.py) on a synthetic
folder: the split by person, the curated crop, and the summary. The check itself needs real
photographs and is run by hand (make bench-photos), not here."""
import csv

import cv2
import numpy as np
import pytest

from cephalometric.errors import UserError
from cephalometric.evaluation.real_photos import (
    CROP_EXTENT,
    CROP_SIDE,
    crop_matrix,
    crop_unsure,
    curated_crop,
    read_landmarks,
    summary,
    to_crop,
)


def write_folder(root, persons=12, photos_each=2):
    (root / 'photos').mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(root / 'landmarks.csv', 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['file', 'person', 'facing'] + [f'p{i}_{a}' for i in (1, 2, 3)
                                                         for a in 'xy'])
        for person in range(1, persons + 1):
            for n in range(photos_each):
                name = f'{person:03d}_{n}.jpg'
                cv2.imwrite(str(root / 'photos' / name), rng.integers(0, 255, (80, 60, 3),
                                                                      np.uint8))
                writer.writerow([name, f'{person:03d}', 'left' if n else 'right', 10, 20, 40,
                                 25, 30, 60])


def test_persons_are_split_whole_into_train_dev_and_held_out(tmp_path):
    write_folder(tmp_path)
    names, photos = read_landmarks(str(tmp_path))
    assert names == ['p1', 'p2', 'p3']
    parts = {}
    for photo in photos:
        parts.setdefault(photo['person'], set()).add(photo['part'])
    assert all(len(p) == 1 for p in parts.values())          # never a person in two parts
    held_out = sorted(person for person, p in parts.items() if p == {'test'})
    assert held_out == ['004', '008', '012']                 # every fourth person
    assert any(p == {'dev'} for p in parts.values())


def test_a_folder_without_landmarks_is_one_line(tmp_path):
    with pytest.raises(UserError, match='landmarks.csv'):
        read_landmarks(str(tmp_path))


@pytest.mark.parametrize('old, new, fragment', [
    (',right,10,', ',right,ten,', 'not a number'), (',right,', ',up,', 'left or right'),
    (',right,10,', ',right,nan,', 'finite')])
def test_a_damaged_landmarks_csv_is_one_line(tmp_path, old, new, fragment):
    write_folder(tmp_path)
    path = tmp_path / 'landmarks.csv'
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(UserError, match=fragment):
        read_landmarks(str(tmp_path))


@pytest.mark.parametrize('facing', ['right', 'left'])
def test_the_curated_crop_holds_the_points_at_the_training_framing(facing):
    points = np.array([[10.0, 20.0], [40.0, 25.0], [30.0, 60.0]])
    photo = {'points': points, 'facing': facing}
    matrix = crop_matrix(points, facing)
    mapped = to_crop(matrix, points)
    extent = mapped.max(0) - mapped.min(0)
    assert extent.max() == pytest.approx(CROP_SIDE / CROP_EXTENT)
    centre = (mapped.min(0) + mapped.max(0)) / 2
    assert abs(centre[0] - CROP_SIDE / 2) <= 1 + 1e-9 and centre[1] == pytest.approx(CROP_SIDE / 2)
    # mirrored to face right: the point furthest right in the photo is furthest left in the crop
    order = np.argsort(mapped[:, 0])
    assert (order == np.argsort(points[:, 0])).all() == (facing == 'right')
    crop, crop_points, _ = curated_crop(np.zeros((80, 60, 3), np.uint8), photo)
    assert crop.shape == (CROP_SIDE, CROP_SIDE, 3) and np.allclose(crop_points, mapped)


def test_summary_counts_failures_flags_and_what_is_left_unflagged():
    rows = [dict(person='a', crop_error=2.0, taken_error=2.2, facing_right=True, flagged=False,
                 crop_unsure=True, single_s=0.01, framing_s=0.05),
            dict(person='b', crop_error=2.0, taken_error=20.0, facing_right=False, flagged=True,
                 crop_unsure=True, single_s=0.01, framing_s=0.05),
            dict(person='c', crop_error=2.0, taken_error=2.0, facing_right=True, flagged=True,
                 crop_unsure=False, single_s=0.01, framing_s=0.05),
            dict(person='d', crop_error=2.0, taken_error=9.0, facing_right=True, flagged=True,
                 crop_unsure=False, single_s=0.01, framing_s=0.05)]
    for row in rows:
        row['ratio'] = row['taken_error'] / row['crop_error']
    result = summary(rows)
    assert result['failed'] == 2 and result['failed_flagged_share'] == 1.0
    assert result['others_flagged_share'] == 0.5
    assert result['unflagged'] == 1 and result['unflagged_taken_over_crop'] == pytest.approx(1.1)
    assert result['facing_right_share'] == pytest.approx(3 / 4)
    assert result['framing_over_single_pass'] == pytest.approx(5.0)
    # of the two failures, one is a face the model does not recognise on its own crop either
    # (a good photo whose crop fails the check does not count)
    assert result['failed_crop_unsure'] == 1


class FakeModel:
    """A predictor that places its landmarks `offset` px from fixed points at confidence `score`."""

    def __init__(self, score, offset=0.0, finder=None, face_check=None):
        self.score, self.offset, self.finder = score, offset, finder
        self.settings = {'face_check': face_check}

    def __call__(self, images, bboxes, batch_size=1):
        class Found:
            keypoints = np.array([[50.0, 60.0], [120.0, 80.0], [90.0, 170.0]]) + self.offset
            scores = np.full(3, self.score)
        return [Found() for _ in images]

    def framing_predictor(self):
        return self.finder or self

    def coarse_predictor(self):
        return self


@pytest.mark.parametrize('score, offset, unsure', [
    (0.9, 0.0, False),      # confident, and both models agree: a face it recognises
    (0.5, 0.0, True),       # under the validation faces' least confidence
    (0.9, 20.0, True),      # the framing and landmark models 13% of the crop apart (ceiling 4%)
])
def test_a_crop_the_model_does_not_recognise_is_told_apart(score, offset, unsure):
    check = {'landmark_score_floor': 0.7, 'disagreement_ceiling': 0.04}
    model = FakeModel(score, finder=FakeModel(0.9, offset), face_check=check)
    assert crop_unsure(model, np.zeros((CROP_SIDE, CROP_SIDE, 3), np.uint8)) is unsure
    # without a face check, or without a framing model to compare with, it cannot be told
    assert crop_unsure(FakeModel(score, face_check=check), np.zeros((8, 8, 3), np.uint8)) is None
    assert crop_unsure(FakeModel(score, finder=FakeModel(0.9)), np.zeros((8, 8, 3))) is None


def test_a_work_dir_holding_files_is_refused_before_any_work(tmp_path, capsys):
    from cephalometric.errors import run_cli
    from cephalometric.evaluation.real_photos import main
    write_folder(tmp_path / 'set')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'notes.txt').write_text('mine')
    assert run_cli(main, ['--folder', str(tmp_path / 'set'), '--work-dir', str(work)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --work-dir') and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in work.iterdir()) == ['notes.txt']
