# Shared with lightzero's top-level `zoo` package: extend the search path so that this
# project's modules and lightzero's (e.g. zoo.atari.envs) import side by side.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
