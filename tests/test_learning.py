"""The model learns: a few CPU minutes on the demo data beat the mean-shape baseline clearly."""
import json

from cephalometric.data.reader import mean_shape_baseline


def test_short_cpu_run_clearly_beats_the_mean_shape(learned_run):
    prepared, work_dir = learned_run
    best = json.loads((work_dir / 'best_MRE.json').read_text())
    baseline = mean_shape_baseline(str(prepared), 'val')['MRE']
    print(f'validation MRE {best["best_score"]:.2f} px vs mean shape {baseline:.2f} px')
    assert baseline > 5.0  # the task is not trivial: faces vary
    assert best['best_score'] < 0.7 * baseline


def test_the_refinement_model_lowers_the_error_of_the_landmark_model(learned_run):
    """The refinement model trained with the learned run (4 epochs) re-locates the validation
    landmarks closer than the landmark model alone, so validation keeps it."""
    import numpy as np

    from cephalometric.data.reader import load_split
    from cephalometric.evaluation.statistics import predict_split_all
    from cephalometric.prediction.predictor import LandmarkPredictor
    prepared, work_dir = learned_run
    assert json.loads((work_dir / 'best_MRE.json').read_text())['refine_model']['kept']
    split = load_split(str(prepared), 'val')
    predictor = LandmarkPredictor(str(work_dir / 'best_MRE.pth'), device='cpu')
    assert predictor.refiner is not None
    errors = {}
    for name, model in (('refined', predictor), ('coarse', predictor.coarse_predictor())):
        predicted = np.stack([p.keypoints for p in predict_split_all(model, split.image_paths, 8)])
        errors[name] = float(np.nanmean(np.linalg.norm(predicted - split.keypoints, axis=-1)))
    print(f'validation MRE: landmark model {errors["coarse"]:.2f} px, refined '
          f'{errors["refined"]:.2f} px')
    assert errors['refined'] < 0.95 * errors['coarse']
