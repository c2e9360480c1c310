"""The set-up files agree with each other and with the README."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_environment_yml_pins_the_same_packages_as_pyproject():
    pyproject = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    conda = set(re.findall(r"^\s+- ([A-Za-z0-9_.-]+==[^\s]+)$", (ROOT / "environment.yml").read_text(), re.M))
    assert conda == pyproject
    assert all("==" in pin for pin in pyproject), "every dependency is pinned exactly"


def test_readme_starts_with_the_two_commands_and_ci_runs_make_test():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "lab"], ["make", "test"]]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_notebook_is_on_the_course_map():
    readme = (ROOT / "README.md").read_text()
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"(notebooks/{notebook.name})" in readme, f"{notebook.name} missing from the README's course map"
