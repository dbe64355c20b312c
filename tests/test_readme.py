"""The README's Python examples run as written, and its commands match .ci/run."""

import re
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _python_blocks(text: str = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples() -> None:
    assert _python_blocks(), "README has no ```python examples"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_examples_run(doc: Path) -> None:
    """Each document's python blocks run in order, in one namespace, as a reader would."""
    namespace = {"__name__": "doc_example"}
    for block in _python_blocks(doc.read_text()):
        with jax.numpy_rank_promotion("allow"):
            exec(compile(block, doc.name, "exec"), namespace)


def test_ci_runs_the_readme_test_command() -> None:
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_commands = [b.strip() for b in bash_blocks if "pytest" in b]
    assert test_commands, "README has no test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_commands[0] in ci, "'.ci/run' must run exactly the README's test command"
