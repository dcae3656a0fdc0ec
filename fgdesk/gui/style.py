"""Look of the app: one light theme (Fusion + palette + a small style sheet)."""
from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#2f6fed"
ACCENT_DARK = "#2458c4"
TEXT = "#1d2330"
MUTED = "#667085"
BORDER = "#dfe3ea"
WINDOW = "#f4f6f9"
CARD = "#ffffff"
SIDEBAR = "#1c2230"
DANGER = "#c8372d"
SUCCESS = "#1f8a4c"
WARNING = "#b7791f"

# Curve colours for the plots (colour-blind friendly, from the Okabe-Ito palette).
PLOT_COLOURS = {
    "loss_raw": (86, 180, 233, 90),
    "loss_ema": (0, 114, 178),
    "lr": (230, 159, 0),
    "knn": (0, 158, 115),
    "speed": (204, 121, 167),
}

STATUS_COLOURS = {
    "running": ACCENT,
    "finished": SUCCESS,
    "stopped": WARNING,
    "interrupted": WARNING,
    "failed": DANGER,
}

STYLE_SHEET = f"""
QMainWindow, QDialog {{ background: {WINDOW}; }}
QWidget#Page {{ background: {WINDOW}; }}
QFrame#Card {{ background: {CARD}; border: 1px solid {BORDER}; border-radius: 8px; }}
QLabel#Title {{ font-size: 17px; font-weight: 600; color: {TEXT}; }}
QLabel#Subtitle {{ font-size: 13px; font-weight: 600; color: {TEXT}; }}
QLabel#Muted {{ color: {MUTED}; }}
QLabel#Metric {{ font-size: 19px; font-weight: 600; color: {TEXT}; }}
QLabel#MetricCaption {{ color: {MUTED}; font-size: 11px; }}
QLabel#Error {{ color: {DANGER}; }}
QLabel#Chip {{ background: #e8effd; color: {ACCENT_DARK}; border-radius: 9px; padding: 1px 8px; font-size: 11px; }}
QLabel#EmptyIcon {{ color: #b8c0cc; }}
QListWidget#Sidebar {{
    background: {SIDEBAR}; border: none; color: #d7dce5; outline: 0; padding-top: 6px;
}}
QListWidget#Sidebar::item {{ padding: 10px 12px; margin: 2px 8px; border-radius: 6px; }}
QListWidget#Sidebar::item:selected {{ background: #34405a; color: white; }}
QListWidget#Sidebar::item:hover:!selected {{ background: #262e40; }}
QWidget#SidebarPanel {{ background: {SIDEBAR}; }}
QLabel#SidebarTitle {{ color: white; font-size: 16px; font-weight: 600; }}
QLabel#SidebarFoot {{ color: #8d96a8; font-size: 11px; }}
QPushButton {{
    padding: 5px 12px; border: 1px solid #c9d0db; border-radius: 6px; background: white; color: {TEXT};
}}
QPushButton:hover {{ background: #f0f3f8; }}
QPushButton:pressed {{ background: #e4e9f1; }}
QPushButton:disabled {{ color: #a3abb8; background: #f4f6f9; border-color: #e1e5eb; }}
QPushButton#Primary {{ background: {ACCENT}; color: white; border: 1px solid {ACCENT_DARK}; font-weight: 600; }}
QPushButton#Primary:hover {{ background: {ACCENT_DARK}; }}
QPushButton#Primary:disabled {{ background: #9db7ee; border-color: #9db7ee; color: #eef3fd; }}
QPushButton#Danger {{ color: {DANGER}; }}
QToolButton#Disclosure {{ border: none; font-weight: 600; color: {TEXT}; padding: 4px 0; }}
QProgressBar {{
    border: 1px solid {BORDER}; border-radius: 5px; background: #eef1f5; text-align: center; height: 14px;
    color: {TEXT}; font-size: 11px;
}}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 4px; }}
QProgressBar#ScoreBar {{ border: none; background: #eef1f5; height: 10px; }}
QProgressBar#ScoreBar::chunk {{ background: #5b8def; border-radius: 4px; }}
QTableWidget, QTreeWidget, QListView, QListWidget {{
    background: white; border: 1px solid {BORDER}; border-radius: 6px; alternate-background-color: #f8f9fb;
}}
QHeaderView::section {{
    background: #f4f6f9; border: none; border-bottom: 1px solid {BORDER}; padding: 4px 6px; color: {MUTED};
    font-weight: 600;
}}
QLineEdit {{ padding: 3px 6px; border: 1px solid #c9d0db; border-radius: 5px; background: white; }}
QLineEdit:focus {{ border: 1px solid {ACCENT}; }}
QLineEdit[invalid="true"], QSpinBox[invalid="true"], QDoubleSpinBox[invalid="true"], QComboBox[invalid="true"] {{
    border: 1px solid {DANGER}; background: #fdf1f0;
}}
QTabWidget::pane {{ border: 1px solid {BORDER}; border-radius: 6px; background: white; top: -1px; }}
QTabBar::tab {{ padding: 6px 12px; border: none; color: {MUTED}; }}
QTabBar::tab:selected {{ color: {TEXT}; border-bottom: 2px solid {ACCENT}; font-weight: 600; }}
QSplitter::handle {{ background: transparent; }}
QStatusBar {{ background: white; border-top: 1px solid {BORDER}; color: {MUTED}; }}
QScrollArea {{ border: none; background: transparent; }}
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style with a light palette, so the app looks the same on every platform."""
    app.setStyle("Fusion")
    palette = QPalette()
    palette.setColor(QPalette.ColorRole.Window, QColor(WINDOW))
    palette.setColor(QPalette.ColorRole.WindowText, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.Base, QColor(CARD))
    palette.setColor(QPalette.ColorRole.AlternateBase, QColor("#f8f9fb"))
    palette.setColor(QPalette.ColorRole.Text, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.Button, QColor(CARD))
    palette.setColor(QPalette.ColorRole.ButtonText, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.Highlight, QColor(ACCENT))
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("white"))
    palette.setColor(QPalette.ColorRole.ToolTipBase, QColor(CARD))
    palette.setColor(QPalette.ColorRole.ToolTipText, QColor(TEXT))
    palette.setColor(QPalette.ColorRole.PlaceholderText, QColor("#98a1b0"))
    app.setPalette(palette)
    font = app.font()
    if font.pointSizeF() < 9.5:
        font.setPointSizeF(9.5)
    font.setStyleStrategy(QFont.StyleStrategy.PreferAntialias)
    app.setFont(font)
    app.setStyleSheet(STYLE_SHEET)


def configure_plots() -> None:
    """pyqtgraph defaults that match the theme; idempotent."""
    import pyqtgraph as pg

    pg.setConfigOptions(background="w", foreground=MUTED, antialias=False)  # cheap repaints during a run
