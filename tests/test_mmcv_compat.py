"""mmpose imports on mmcv-lite through the compatibility module."""
import subprocess
import sys

import pytest


def test_mmpose_imports_and_missing_ops_fail_with_one_clear_line():
    import cephalometric.mmpose_plugins.mmcv_compat as mmcv_compat  # noqa: I001  (must precede mmpose)
    import mmpose.apis  # noqa: F401
    import mmpose.models  # noqa: F401
    from mmcv.ops import MultiScaleDeformableAttention

    if not mmcv_compat.USING_STAND_IN:
        pytest.skip('full mmcv with compiled ops is installed; nothing to stand in for')
    with pytest.raises(mmcv_compat.MissingCompiledOpError, match='full mmcv'):
        MultiScaleDeformableAttention()
    # ops mmpose imports inside try/except must stay missing, so its own fallbacks kick in
    with pytest.raises(ImportError):
        from mmcv.ops import DeformConv2d  # noqa: F401


def test_without_the_module_mmpose_does_not_import_on_mmcv_lite():
    """Guards the reason the module exists; if this starts passing, the module can go."""
    from cephalometric.mmpose_plugins import mmcv_compat
    if not mmcv_compat.USING_STAND_IN:
        pytest.skip('full mmcv is installed')
    result = subprocess.run([sys.executable, '-c', 'import mmpose.models'],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert 'mmcv._ext' in result.stderr or 'mmcv.ops' in result.stderr
