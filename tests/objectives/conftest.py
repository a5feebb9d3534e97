import sys
from pathlib import Path

# The shared comparison helpers (_compare.py) live beside the tests and are imported by name.
sys.path.insert(0, str(Path(__file__).parent))
