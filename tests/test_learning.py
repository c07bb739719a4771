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
