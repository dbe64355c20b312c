"""The README's Python examples run as written, and its commands match .ci/run."""

import re
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


FILE_LISTING = re.compile(r"^# (\S+\.py)(?::.*)?$", re.M)


def _python_blocks(text: str = README) -> list[str]:
    """The ```python blocks, except listings of files (each file headed ``# path.py``):
    tests/experiments/test_extensions.py writes those out and runs them."""
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if not FILE_LISTING.match(b)]


def file_listing(text: str = README) -> dict[str, str]:
    """The files of the README's file-listing block: ``{path: source}``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
              if FILE_LISTING.match(b)]
    assert len(blocks) == 1, "expected one file-listing block in the README"
    heads = list(FILE_LISTING.finditer(blocks[0]))
    ends = [h.start() for h in heads[1:]] + [len(blocks[0])]
    return {h.group(1): blocks[0][h.start():end].rstrip() + "\n"
            for h, end in zip(heads, ends, strict=True)}


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
