"""Helpers of the dataset-tool tests: importing a tool script as a module."""
import importlib.util
import os
import sys

TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")
CHANNELS = 4  # the tiny datasets' stacks: one band x four polarizer angles


def load_tool(name: str):
    """Import ``tools/<name>.py`` (a script, not a package module) once and return it."""
    module_name = f"_polar_tool_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(TOOLS_DIR, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return sys.modules[module_name]
