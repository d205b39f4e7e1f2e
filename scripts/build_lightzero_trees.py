"""Build lightzero 0.2.0's compiled MCTS trees for the running Python from the v0.2.0 source archive.

lightzero 0.2.0 is published as a CPython 3.11 wheel only, and that wheel ships no C++ sources. The six
Cython trees (``lzero/mcts/ctree/ctree_*/*.pyx`` with their ``lib/*.cpp``) are built here the way
lightzero's own ``setup.py`` builds them (C++11, numpy and Python headers), without running that
``setup.py`` (it imports ``distutils``, gone in Python 3.12):

    python scripts/build_lightzero_trees.py SOURCE.tar.gz SITE_DIR [--jobs N]

``SITE_DIR`` must already hold lightzero's pure-Python ``lzero`` package (from the wheel); each built
extension module is copied next to its ``.pyx`` location there, e.g.
``SITE_DIR/lzero/mcts/ctree/ctree_muzero/mz_tree.cpython-312-x86_64-linux-gnu.so``. Needs Cython, numpy
(the one the trees will run with: put it on ``PYTHONPATH``), setuptools and a C++ compiler.
"""
import argparse
import glob
import os
import shutil
import sys
import tarfile
import tempfile
import time
from typing import List

TREE_GLOB = "lzero/mcts/ctree/ctree_*/*.pyx"


def _source_root(archive: str, workdir: str) -> str:
    """Unpack ``archive`` into ``workdir``; returns the directory holding ``lzero/``."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/lzero/mcts/ctree/" in f"/{m.name}"]
        tar.extractall(workdir, members=members)
    roots = [p[:p.rindex(os.sep + "lzero" + os.sep)] for p in glob.glob(os.path.join(workdir, "*", TREE_GLOB))]
    if not roots:
        raise SystemExit(f"error: {archive} holds no {TREE_GLOB} (not a LightZero source archive)")
    return roots[0]


def build(archive: str, site: str, jobs: int) -> List[str]:
    """Build every tree of ``archive`` and copy the modules into ``site``; returns the copied paths."""
    import numpy as np
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    if not os.path.isdir(os.path.join(site, "lzero", "mcts", "ctree")):
        raise SystemExit(f"error: {site} has no lzero/mcts/ctree: unpack lightzero's wheel there first")
    workdir = tempfile.mkdtemp(prefix="lightzero_trees_")
    root = _source_root(archive, workdir)
    cwd = os.getcwd()
    os.chdir(root)  # extension names follow the paths relative to the source root
    try:
        extensions = []
        for pyx in sorted(glob.glob(TREE_GLOB)):
            name = os.path.splitext(pyx)[0].replace(os.sep, ".")
            extensions.append(Extension(name, [pyx], include_dirs=[np.get_include()], language="c++",
                                        extra_compile_args=["-std=c++11", "-O3"], extra_link_args=["-std=c++11"]))
        setup(name="lightzero-trees", ext_modules=cythonize(extensions, language_level=3, nthreads=jobs, quiet=True),
              script_args=["build_ext", "--inplace", f"--parallel={jobs}"])
        copied = []
        for module in glob.glob("lzero/mcts/ctree/ctree_*/*.so"):
            target = os.path.join(site, module)
            shutil.copy2(module, target)
            copied.append(target)
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", help="LightZero-v0.2.0-*.tar.gz")
    parser.add_argument("site", help="directory holding lightzero's pure-Python lzero package")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    start = time.perf_counter()
    copied = build(args.archive, args.site, args.jobs)
    print(f"[build_lightzero_trees] {len(copied)} trees for Python {sys.version.split()[0]} in "
          f"{time.perf_counter() - start:.0f} s: {', '.join(sorted(os.path.basename(p) for p in copied))}")
    return 0 if copied else 1


if __name__ == "__main__":
    sys.exit(main())
