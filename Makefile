# Two commands do everything on a fresh machine:  make demo   and   make test
# Both create .venv/ with the pinned dependencies first (about 3-5 minutes, ~6 GB).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEMO_DIR := data/demo
DEMO_WORK := work_dirs/demo
USER_PICKLE := data/train_data_pure_depth.pkl
DATA_ROOT := data/cephalometric
WORK_DIR := work_dirs/cephalometric

.PHONY: install browser demo train test test-fast lint bench bench-photos clean-demo review-screenshot

install: $(STAMP)

# mmpose 1.3.2 and mmdet 3.3.0 go in with --no-deps: mmpose's chumpy dependency cannot build,
# and mmdet is only needed for one module mmpose imports at start-up. requirements.txt lists the
# real runtime dependencies with the pins that work together (see README, Installation).
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps mmpose==1.3.2 mmdet==3.3.0
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	$(PY) -c "import cephalometric.mmpose_plugins.mmcv_compat, mmpose.models, mmpose.apis; print('mmpose ready')"
	touch $(STAMP)

# The whole pipeline on a generated demo dataset: no private data, GPU or internet needed.
# The schedule is sized to finish in about 10 minutes on a 2-core CPU: small input, short
# warm-up, random initial weights (the AFLW checkpoint would need the internet). 12 epochs of the
# landmark model on the crops, then 3 of the framing model (zoom-out) that finds faces in wide
# photos (see the config's framing_model) and 4 of the refinement model on patches around each
# landmark (the config's refine_model). 3 framing epochs frame as well as 10 did (docs/inference.md);
# the time saved goes to refinement, and sigma 1.0 beat 1.5 with both seeds (docs/evaluation.md).
demo: install
	$(PY) -m cephalometric.data.demo --out $(DEMO_DIR)/train_data_pure_depth.pkl --num-patients 300
	$(PY) prepare_cephalometric_data.py --input $(DEMO_DIR)/train_data_pure_depth.pkl \
		--out-dir $(DEMO_DIR)/cephalometric --overwrite
	$(PY) train_cephalometric.py --data-root $(DEMO_DIR)/cephalometric --work-dir $(DEMO_WORK) \
		--no-pretrained --epochs 12 --framing-epochs 3 --refine-epochs 4 --batch-size 8 --input-size 96 \
		--sigma 1.0 --lr 2e-3 --workers 0 --warmup-iters 30
	@$(PY) inference.py --checkpoint $(DEMO_WORK)/best_MRE.pth \
		--img-path "$$($(PY) -c "import json; d=json.load(open('$(DEMO_DIR)/cephalometric/annotations/test.json')); print('$(DEMO_DIR)/cephalometric/images/' + d['images'][0]['file_name'])")" \
		--out-file $(DEMO_WORK)/inference_example.jpg --json $(DEMO_WORK)/inference_example.json

# The full schedule (100 epochs, AFLW-pretrained) on your own pickle.
train: install
	@test -f $(USER_PICKLE) || { echo "error: $(USER_PICKLE) not found; put your pickle there (see README, Data)"; exit 2; }
	@test -f $(DATA_ROOT)/annotations/train.json || $(PY) prepare_cephalometric_data.py --input $(USER_PICKLE) --out-dir $(DATA_ROOT)
	$(PY) train_cephalometric.py --data-root $(DATA_ROOT) --work-dir $(WORK_DIR)

test: install browser
	$(PY) -m pytest -q --durations=15 tests

# The developer's loop: everything except the tests that train a model or drive the browser,
# one pytest-xdist worker per core (make test stays in one process: tests that train must not
# share the cores).
test-fast: install
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile --durations=10 tests

# Headless Chromium for the review app's browser tests: Debian's chromium and chromium-driver
# (nothing downloads a browser at run time). Installed with apt-get when missing; needs root.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y chromium chromium-driver; \
	else \
		echo "error: chromium and chromium-driver are missing; run as root: apt-get install -y chromium chromium-driver (or: sudo make browser)"; \
		exit 2; \
	fi

# The README picture of the review page, from the demo model (run make demo first).
review-screenshot: install browser
	$(PY) -m cephalometric.review.browser --checkpoint $(DEMO_WORK)/best_MRE.pth \
		--images $(DEMO_DIR)/cephalometric/images --out docs/review_app.png

# ruff at 100 columns (configuration in pyproject.toml)
lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) benchmark.py

# Real profile photographs as taken against their curated crops (docs/inference.md, Framing):
# trains a small model on the crops of 3/4 of the persons (about 15 minutes on 2 cores), then
# predicts the others' photos. PHOTOS: a folder with landmarks.csv and photos/.
PHOTOS ?= ../shared/cfp-profiles-dev
bench-photos: install
	$(PY) -m cephalometric.evaluation.real_photos --folder $(PHOTOS) --work-dir work_dirs/real_photos

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_WORK)
