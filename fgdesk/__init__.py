"""fgdesk: self-supervised fine-grained image recognition for the lab desktop."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fgdesk")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
