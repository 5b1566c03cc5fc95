"""Makes ``tests/common.py`` importable as ``common`` from every test folder.

pytest's default ("prepend") import mode already puts the folder of a package-less conftest.py on
sys.path; inserting it explicitly keeps ``from common import ...`` working under
``--import-mode=importlib`` too, and regardless of the directory pytest is started from.
"""
import os
import sys

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
