"""Screenshots of the built site with headless Chromium (Qt WebEngine), to check how it renders.

    pip install -e '.[screenshots]'
    sphinx-build -W -b html docs docs/_build/html
    python docs/screenshots.py docs/_build/html

writes ``<html>/screenshots/<page>.png`` for the index, one API page and one tutorial (or the
pages named after the folder), each after waiting for MathJax to typeset.  Offline, build
with a local MathJax first (``npm install mathjax@3``, then ``sphinx-build ... -D
mathjax_path=file:///path/to/node_modules/mathjax/es5/tex-mml-chtml.js``): the default loads
it from a CDN.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PAGES = ("index.html", "api/normjax.html", "tutorials/batch_norm_state.html")
WIDTH, HEIGHT = 1280, 2000
TYPESET_MS = 4000  # MathJax and images settle


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    pages = argv[1:] or list(PAGES)
    missing = [p for p in pages if not (root / p).is_file()]
    if missing:
        print(f"error: not built under {root}: {missing}", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu")
    from PySide6.QtCore import QSize, QTimer, QUrl
    from PySide6.QtWebEngineWidgets import QWebEngineView
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    view = QWebEngineView()
    view.resize(QSize(WIDTH, HEIGHT))
    out_dir = root / "screenshots"
    out_dir.mkdir(exist_ok=True)
    queue = list(pages)

    def load_next() -> None:
        if not queue:
            app.quit()
            return
        view.load(QUrl.fromLocalFile(str(root / queue[0])))

    def loaded(ok: bool) -> None:
        page = queue.pop(0)

        def grab() -> None:
            out = out_dir / (page.replace("/", "_").removesuffix(".html") + ".png")
            view.grab().save(str(out))
            print(f"{'saved' if ok else 'FAILED to load, saved'} {out}")
            load_next()
        QTimer.singleShot(TYPESET_MS, grab)

    view.loadFinished.connect(loaded)
    view.show()
    load_next()
    app.exec()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
