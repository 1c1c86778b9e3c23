"""``python -m arraygen demo``: a short tour of what exists, as a report with figures.

Each section is a module in :mod:`arraygen.demos` with ``TITLE``, ``ORDER`` and
``run(ctx) -> str`` (Markdown). The report goes to ``<out>/report.md`` with its figures beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from ..cli import make_output_dir, output_dir

HELP = "run a short tour of arraygen, writing a report and figures into an output folder"


def section_names() -> list[str]:
    """The section module names in :mod:`arraygen.demos` (without importing them)."""
    from .. import demos

    return sorted(m.name for m in pkgutil.iter_modules(demos.__path__)
                  if not m.name.startswith("_"))


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="arraygen-demo", type=output_dir,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--sections", nargs="+", default=None, choices=section_names(),
                        metavar="SECTION",
                        help="run only these sections: %(choices)s (default: all)")
    parser.add_argument("--full", action="store_true", help="larger problems (slower)")


@dataclasses.dataclass
class DemoContext:
    """What a demo section gets: where to write, how big to go, and a figure saver."""

    out_dir: Path
    quick: bool = True
    figures: list = dataclasses.field(default_factory=list)

    def savefig(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``<out>/<name>.png`` and return the Markdown image link."""
        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.figures.append(path)
        return f"![{name}]({path.name})"


def sections() -> list:
    """The demo section modules, in report order."""
    from .. import demos

    mods = [importlib.import_module(f"{demos.__name__}.{m.name}")
            for m in pkgutil.iter_modules(demos.__path__) if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def check(args) -> None:
    """Create the output folder (a failure names ``--out``) before anything runs."""
    make_output_dir(Path(args.out), "--out")


def run(args) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = make_output_dir(Path(args.out), "--out")
    ctx = DemoContext(out_dir=out, quick=not args.full)
    import arraygen
    from . import info

    lines = [f"# arraygen {arraygen.__version__} demo", "",
             "Backends here: " + ", ".join(f"{k}: {v}"
                                           for k, v in info.collect()["backends"].items()),
             ""]
    failed = 0
    for module in sections():
        short = module.__name__.rsplit(".", 1)[1]
        if args.sections and short not in args.sections:
            continue
        print(f"[demo] {module.TITLE} ...", flush=True)
        start = time.perf_counter()
        try:
            body = module.run(ctx)
        except Exception as exc:
            failed += 1
            body = "**This section failed:**\n\n```\n" + traceback.format_exc() + "```\n"
            if getattr(args, "debug", False):
                traceback.print_exc()
            print(f"[demo]   section {short!r} failed: {type(exc).__name__}: {exc} (traceback in "
                  f"{out / 'report.md'})", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - start
        lines += [f"## {module.TITLE}", "", body.strip(), "", f"_({elapsed:.1f} s)_", ""]
        print(f"[demo]   done in {elapsed:.1f} s", flush=True)
    report = out / "report.md"
    report.write_text("\n".join(lines))
    print(f"[demo] report: {report} ({len(ctx.figures)} figures)")
    return 1 if failed else 0
