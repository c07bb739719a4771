"""The initial weights of a training run: the pretrained checkpoint's download, or --load-from,
checked with the project's safe loader before training starts."""
from __future__ import annotations

import os.path as osp
import sys
import urllib.request

from cephalometric.atomic import atomic_path
from cephalometric.errors import UserError


# -- initial weights ------------------------------------------------------------------------------
def fetch_pretrained(url: str) -> str:
    """Path of the pretrained checkpoint in torch's cache, downloading it once.

    Failing here, with the two ways out, beats failing deep inside the Runner or silently
    training from scratch.
    """
    import torch
    cache = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(url))
    if osp.isfile(cache):
        return cache
    print(f'downloading pretrained weights {url}', file=sys.stderr)
    try:
        with atomic_path(cache) as temporary, open(temporary, 'wb') as out, \
                urllib.request.urlopen(url, timeout=30) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except Exception as error:  # no network, proxy, HTTP error, disk full
        reason = getattr(error, 'reason', None) or error
        raise UserError(f'cannot download the pretrained checkpoint {url} ({reason}); '
                        'download it yourself and pass --load-from PATH, or pass --no-pretrained '
                        'to train from random weights') from None
    return cache


def check_weights_file(path: str) -> None:
    """Refuse, before any work, a --load-from that is not a checkpoint torch loads safely.

    The same loader as inference (weights_only=True with a narrow allow-list: nothing in the file
    runs); the Runner loads the file again when training starts.
    """
    from cephalometric.model.checkpoint import load_checkpoint_file

    if not osp.isfile(path):
        raise UserError(f'--load-from file not found: {path}; pass a .pth checkpoint, or '
                        '--no-pretrained to train from random weights')
    try:
        load_checkpoint_file(path)
    except UserError as error:
        raise UserError(f'--load-from: {error}') from None


def resolve_initial_weights(cfg, args) -> None:
    """Set cfg.load_from: the pretrained download, --load-from, or nothing (random / --resume)."""
    if args.resume:
        cfg.load_from = None  # the Runner resumes from <work_dir>/last_checkpoint
        return
    if args.no_pretrained:
        cfg.load_from = None
        print('note: training from random weights (--no-pretrained)', file=sys.stderr)
        return
    source = args.load_from or cfg.get('load_from')
    if not source:
        return
    if source.startswith(('http://', 'https://')):
        source = fetch_pretrained(source)
    check_weights_file(source)
    cfg.load_from = source
