"""matplotlib for lr0fm's figures: the file-only Agg backend, imported only when a figure is drawn
(reading records, reports and compare need no matplotlib), and figures saved without
matplotlib's warnings reaching the user."""
from __future__ import annotations

import io
import warnings


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_png(fig, dpi: int = 110, tight_layout: bool = True, **savefig) -> bytes:
    """``fig`` laid out (``tight_layout``) as PNG bytes, then closed. matplotlib's warnings (a
    layout it could not apply, a font it lacks) are kept out of the output: they point into its
    internals and leave the figure usable."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if tight_layout:
                fig.tight_layout()
            fig.savefig(buf, format="png", dpi=dpi, **savefig)
    finally:
        plt.close(fig)
    return buf.getvalue()
