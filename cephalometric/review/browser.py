"""Headless Chromium for the review page: the browser tests and the README screenshot.

    python -m cephalometric.review.browser --checkpoint work_dirs/demo/best_MRE.pth \
        --images data/demo/cephalometric/images --out docs/review_app.png

Job: start Debian's Chromium through Selenium (no browser is ever downloaded: `chromium` and
`chromium-driver` come from apt, see `make browser`), and take a screenshot of the review page.
Imports selenium, Pillow and the package's `errors`, `predictor`, `review_server`, `review_store`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Optional, Sequence

from cephalometric.errors import UserError, run_cli

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'


def chromium(width: int = 1360, height: int = 820):
    """A headless Chromium WebDriver; UserError naming `make browser` when it is not installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    binary = shutil.which('chromium') or CHROMIUM
    driver_path = shutil.which('chromedriver') or CHROMEDRIVER
    if not (os.path.exists(binary) and os.path.exists(driver_path)):
        raise UserError('Chromium is not installed; run `make browser` (apt-get install chromium '
                        'chromium-driver, as root)')
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                     f'--window-size={width},{height}', '--force-device-scale-factor=1'):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # The page area itself is width x height (the window size would include the browser's frame).
    driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride', {
        'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False})
    return driver


def wait_for(condition, timeout: float = 20.0, interval: float = 0.02):
    """Poll `condition()` until it returns something truthy; returns it (TimeoutError if never)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'gave up waiting after {timeout:g} s')
        time.sleep(interval)


def save_small_png(source: str, out_path: str) -> None:
    """Re-save a screenshot as a 256-colour PNG (a README picture should stay small)."""
    from PIL import Image

    from cephalometric.atomic import atomic_path
    with Image.open(source) as image, atomic_path(out_path) as temporary:
        image.convert('RGB').quantize(256).save(temporary, format='PNG', optimize=True)


def enter_initials(driver, initials: str = 'AB') -> None:
    """Answer the page's question for the reviewer's initials (asked once when it opens)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    wait_for(lambda: driver.execute_script(
        'return document.querySelector("#reviewer-dialog").open'))
    driver.find_element(By.CSS_SELECTOR, '#reviewer-input').send_keys(initials, Keys.ENTER)


def screenshot(url: str, out_path: str, select: Optional[int] = 3, width: int = 1280,
               height: int = 720) -> None:
    """Open the review page at `url`, select landmark `select` (1-based), save a screenshot."""
    from selenium.webdriver.common.by import By
    driver = chromium(width, height)
    try:
        driver.get(url)
        enter_initials(driver)
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-measurement="ANB"]'))
        wait_for(lambda: driver.execute_script(
            'const i = document.querySelector("#canvas image");'
            'return i && i.getBBox().width > 0 && document.readyState === "complete" && '
            'document.querySelector("#loading").hidden'))
        if select:
            driver.find_element(By.TAG_NAME, 'body').send_keys(str(select))
        time.sleep(0.5)   # let the image decode and paint
        with tempfile.TemporaryDirectory() as folder:
            raw = os.path.join(folder, 'page.png')
            driver.save_screenshot(raw)
            save_small_png(raw, out_path)
    finally:
        driver.quit()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Screenshot of the review page for a model.')
    parser.add_argument('--checkpoint', required=True, help='best_MRE.pth or .onnx')
    parser.add_argument('--images', required=True, help='folder of photographs')
    parser.add_argument('--out', default='docs/review_app.png', help='PNG to write')
    parser.add_argument('--size', default='1280x720', help='page size WIDTHxHEIGHT (1280x720)')
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split('x'))
        if not (320 <= width <= 7680 and 240 <= height <= 4320):
            raise ValueError
    except ValueError:
        raise UserError(f'--size {args.size} must be WIDTHxHEIGHT in pixels, e.g. 1280x720') \
            from None
    if not os.path.isfile(args.checkpoint):
        raise UserError(f'checkpoint {args.checkpoint} not found; run `make demo` first')
    from cephalometric.prediction.predictor import LandmarkPredictor
    from cephalometric.review.server import running_server
    from cephalometric.review.store import ReviewStore, model_version
    with tempfile.TemporaryDirectory() as reviewed:
        store = ReviewStore(args.images, reviewed, LandmarkPredictor(args.checkpoint, device='cpu'),
                            log=lambda text: None, model=model_version(args.checkpoint))
        with running_server(store) as url:
            screenshot(url, args.out, width=width, height=height)
    print(f'screenshot: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_cli(main))
