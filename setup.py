"""ScaleZero plugin for LightZero: MoE world model, multi-task training, Dynamic Parameter Scaling.

Install with ``bash scripts/install.sh`` (see README): torch, lightzero and DI-engine carry
conflicting metadata, so they are installed with --no-deps in a fixed order; the pins and their
reasons live in ``requirements/pins.in`` only. ``install_requires`` lists the rest of the pins so
that a plain ``pip install .`` into a prepared environment still states what it needs.
"""
from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).parent
NO_DEPS_GROUP = {"torch", "lightzero", "di-engine"}  # installed by scripts/install.sh, see pins.in


ZOO_MERGE_PTH = "scalezero-zoo.pth"  # start-up hook merging our zoo/ with lightzero's (scalezero_zoo_merge.py)


class BuildPyWithPth(build_py):
    """Ships the zoo-merge .pth at the wheel root, as setuptools ships its own distutils-precedence.pth."""

    def run(self) -> None:
        super().run()
        self.copy_file(str(HERE / ZOO_MERGE_PTH), str(Path(self.build_lib) / ZOO_MERGE_PTH))


class EditableWheelWithPth(editable_wheel):
    """Editable installs skip build_lib, so write the same .pth into the editable wheel directly."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        outputs = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        self.copy_file(str(HERE / ZOO_MERGE_PTH), str(Path(unpacked_wheel) / ZOO_MERGE_PTH))
        return outputs


def read_pins() -> list:
    pins = []
    for line in (HERE / "requirements" / "pins.in").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement and requirement.split("==")[0].lower() not in NO_DEPS_GROUP:
            pins.append(requirement)
    return pins


setup(
    name="scalezero",
    version="0.1.0",
    description="ScaleZero: one MoE world model with MCTS for many tasks, as a LightZero plugin",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires="==3.11.*",  # lightzero 0.2.0 ships only a cp311 wheel
    # `zoo` is shared with lightzero's wheel: its sub-packages merge with lightzero's (see zoo/__init__.py).
    packages=find_namespace_packages(include=["lzero_ext*", "policies*", "zoo*"]),
    py_modules=["scalezero_zoo_merge"],
    install_requires=read_pins(),
    cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth},
    entry_points={"console_scripts": ["scalezero-bench=lzero_ext.bench.__main__:main"]},
    classifiers=["Programming Language :: Python :: 3.11", "License :: OSI Approved :: Apache Software License"],
)
