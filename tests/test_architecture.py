"""The package's layer order, checked on the source: imports go down the layers, never round."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'cephalometric'

# Layers from the bottom up: a module may import its own layer and the ones below it (see
# docs/architecture.md). The old top-level module names are at the top: they only re-export.
LAYERS = [
    ('foundations', ['errors', 'atomic', 'json_data', 'outputs', 'landmarks', 'radial_error',
                     'measurements', 'uncertainty', 'drawing', 'cli']),
    ('data', ['data']),
    ('mmpose_plugins', ['mmpose_plugins']),
    ('model', ['model']),
    ('training', ['training']),
    ('prediction', ['prediction']),
    ('evaluation', ['evaluation']),
    ('review', ['review']),
    ('old import paths', ['mmcv_compat', 'dataset', 'hooks', 'metric', 'transforms', 'rgbd']),
    ('public API', ['__init__']),
]
LAYER_OF = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__' and len(parts) > 1:
        parts.pop()
    return '.'.join(parts)


def imported_modules(path: pathlib.Path, modules: set) -> set:
    """Package modules `path` imports anywhere (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f'{path}: relative import; name the module in full'
            names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def layer(module: str) -> int:
    parts = module.split('.')
    return LAYER_OF['__init__' if len(parts) == 1 else parts[1]]


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob('*.py'))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) - {module_name(path)}
            for path in paths}


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if m.count('.') <= 1 and
                (m.split('.')[1] if '.' in m else '__init__') not in LAYER_OF]
    assert not unplaced, f'add these to LAYERS: {unplaced}'


def test_imports_go_down_the_layers():
    upward = [f'{module} ({LAYERS[layer(module)][0]}) imports {target} '
              f'({LAYERS[layer(target)][0]})'
              for module, targets in import_graph().items() for target in targets
              if layer(target) > layer(module)
              # a subpackage's __init__ counts as its own layer
              and target != module.rsplit('.', 1)[0]]
    assert not upward, '\n'.join(upward)


def test_no_import_cycles():
    graph = import_graph()
    state, cycles = {}, []

    def visit(module, path):
        state[module] = 'open'
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 'open':
                cycles.append(' -> '.join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 'done'

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, '\n'.join(cycles)


def test_the_checks_find_what_they_look_for(tmp_path):
    """The graph sees function-level imports (where the cycles used to hide)."""
    source = tmp_path / 'sample.py'
    source.write_text('def f():\n    from cephalometric.prediction import predictor\n')
    assert imported_modules(source, {'cephalometric.prediction.predictor'}) == {
        'cephalometric.prediction.predictor'}
    assert layer('cephalometric.review.store') > layer('cephalometric.prediction.predictor')


def test_the_public_api_is_light_and_complete():
    """`import cephalometric` imports neither torch nor MMPose; each public name resolves."""
    import subprocess
    import sys
    code = ('import sys, cephalometric; heavy = {"torch", "mmpose", "mmengine"} & set(sys.modules);'
            ' assert not heavy, heavy; from cephalometric import compute_measurements, UserError')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=PACKAGE.parent)
    import cephalometric
    for name in cephalometric.__all__:
        assert getattr(cephalometric, name) is not None
