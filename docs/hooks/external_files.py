"""MkDocs hook: the benchmark plots, which live outside docs/, join the site.

They stay in `benchmarks/results/` (where `make bench` writes them), so there is one copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
# site path -> repository path
EXTERNAL = {
    "img/benchmarks/steady_load.png": "benchmarks/results/steady_load.png",
    "img/benchmarks/relay_drain.png": "benchmarks/results/relay_drain.png",
}


def on_files(files: Files, config: Any, **_: Any) -> Files:
    for site_path, repo_path in EXTERNAL.items():
        files.append(File.generated(config, site_path, abs_src_path=str(ROOT / repo_path)))
    return files
