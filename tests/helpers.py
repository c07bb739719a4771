"""What the test modules share: the repository root, the tiny training schedules and running a
top-level script as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny, fast schedule: 64 px input, random weights, no data-loading processes, no framing model.
TINY_TRAIN_ARGS = ['--no-pretrained', '--epochs', '2', '--batch-size', '4', '--input-size', '64',
                   '--workers', '0', '--framing-epochs', '0', '--warmup-iters',
                   '5']


# No test runs near this long even on a busy machine (the slowest, test_learning, takes about two
# minutes on 2 quiet cores): the limit only ends a run that hangs, it never times a test.
SUBPROCESS_TIMEOUT = 3600

# The learning recipe (Makefile `demo` on fewer images and epochs, and at sigma 1.5, the demo's
# until 2026-12-06, with which the tests' margins were set): ~100 steps at 96 px, then a 2-epoch
# framing model (zoom-out), so the tests of automatic framing use both networks.
LEARNING_ARGS = ['--no-pretrained', '--epochs', '7', '--framing-epochs', '2', '--batch-size', '8',
                 '--input-size', '96', '--sigma', '1.5', '--lr', '2e-3', '--workers', '0',
                 '--seed', '0', '--warmup-iters', '20', '--refine-epochs', '4']


def run_script(script, *args, check=True, timeout=SUBPROCESS_TIMEOUT):
    """Run a top-level script as a user would; returns the CompletedProcess."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f'{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n'
                             f'{result.stderr[-3000:]}')
    return result


def call(url, path, body=None, raw=None, content_type='application/json', headers=None):
    """(status, parsed JSON or bytes) of one HTTP request to a test server; never raises for
    HTTP errors."""
    import json
    import urllib.error
    import urllib.request
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url.rstrip('/') + path, data=data, headers=headers or {})
    if data is not None:
        request.add_header('Content-Type', content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload, kind = response.status, response.read(), response.headers.get(
                'content-type', '')
    except urllib.error.HTTPError as error:
        status, payload, kind = error.code, error.read(), error.headers.get('content-type', '')
    return status, (json.loads(payload) if kind.startswith('application/json') else payload)
