"""The README's NumPy tour runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs(capsys):
    text = README.read_text()
    section = text[text.index("## What is in it"):text.index("Command line:")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the tour is one python block"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["paths"].shape == (21, 50, 2)
    assert namespace["res"].converged
    assert namespace["spins"].dtype.name == "int8"
    # the sampler reaches the mixture: MMD to exact samples at the two-sample noise level
    ag = namespace["ag"]
    exact = namespace["gm"].sample(1000, rng=3)
    floor = abs(float(ag.mmd(namespace["gm"].sample(1000, rng=4), exact, bandwidth=0.5)))
    assert float(ag.mmd(namespace["samples"], exact, bandwidth=0.5)) < 5 * floor + 2e-3
