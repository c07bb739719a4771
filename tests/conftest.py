import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The top-level scripts (mre_metric.py, inference.py, ...) are imported by tests and by configs'
# custom_imports, exactly as when a user runs them from the project folder.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
