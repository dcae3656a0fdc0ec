"""The desktop app (PySide6 + pyqtgraph). Nothing outside this package imports Qt."""
