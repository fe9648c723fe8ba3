"""environment.yml and pyproject.toml ask for the same packages; the README's commands exist."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "")
              for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]  # the pip: list holds the project's packages
    env_lines = [line.strip()[2:].strip() for line in pip_block.splitlines()
                 if line.strip().startswith("- ")]
    env = {_name(r): r.replace(" ", "") for r in env_lines
           if not r.startswith(("python", "pip", "-e"))}
    assert env == wanted


TEST_COMMAND = 'python -m pip install -e ".[test]" && python -m pytest -q'


def test_readme_commands_are_the_ci_ones():
    readme = (ROOT / "README.md").read_text()
    assert TEST_COMMAND in readme
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    assert "minispdf demo" in readme


def test_progress_bars_can_render_as_widgets_in_jupyter():
    """Without ipywidgets, tqdm in JupyterLab prints "TqdmWarning: IProgress not found" instead of a
    bar."""
    import tqdm.notebook

    assert tqdm.notebook.IProgress is not None


def test_every_subpackage_is_installed_by_a_wheel():
    """A package folder missing from the wheel works in an editable install and breaks a plain
    one."""
    from setuptools import find_packages

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"]
    found = set(find_packages(str(ROOT), include=cfg["include"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "minispdf").rglob("__init__.py")}
    assert on_disk <= found
