"""Where the tests find the repository's files, whichever folder a test lives in."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
MODELS = ROOT / "models"
NOTEBOOKS = ROOT / "notebooks"
