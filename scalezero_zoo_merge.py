"""Merge this project's ``zoo`` configs into lightzero's top-level ``zoo`` package.

lightzero's wheel and this project both provide a top-level ``zoo`` package. In a normal
install their files share one directory in site-packages, but in an editable install
lightzero's copy shadows the project's, so ``zoo.atari.config.scalezero_multitask_config``
would not import. ``scalezero-zoo.pth`` (installed next to this module in both modes) calls
:func:`install`, which puts a finder in front of ``sys.meta_path`` that appends the project's
directory to the search path of every ``zoo`` package it finds. Standard library only, so it
costs nothing at interpreter start-up.
"""
import importlib.abc
import importlib.machinery
import os
import sys

_PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


class ZooMergeFinder(importlib.abc.MetaPathFinder):
    """Finds ``zoo`` packages as usual, then adds the project's copy of the same package to their path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "zoo" and not fullname.startswith("zoo."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.submodule_search_locations is None:
            return spec  # a module, or not found here: let the other finders decide
        project_dir = os.path.join(_PROJECT_ROOT, *fullname.split("."))
        if os.path.isdir(project_dir) and project_dir not in spec.submodule_search_locations:
            spec.submodule_search_locations.append(project_dir)
        return spec


def install() -> None:
    if not any(isinstance(finder, ZooMergeFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, ZooMergeFinder())
