"""Helpers of the dataset-tool tests."""
import os

TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")
CHANNELS = 4  # the tiny datasets' stacks: one band x four polarizer angles
