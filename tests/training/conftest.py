import sys
from pathlib import Path

# The small Dataset / ViewGenerator fixtures live beside the tests; spawned and subprocess workers
# import them by name, so their folder goes on the path.
sys.path.insert(0, str(Path(__file__).parent))
