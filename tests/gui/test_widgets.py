"""Small widgets on their own."""
from __future__ import annotations


def test_an_elided_label_cuts_a_long_name_with_an_ellipsis_and_shows_it_whole_when_there_is_room(qtbot):
    from fgdesk.gui.widgets import ElidedLabel

    name = "001.Black_footed_Albatross_with_a_long_name"
    label = ElidedLabel(name)
    qtbot.addWidget(label)
    label.show()  # a hidden widget is told of its new size only when shown
    label.resize(80, 20)
    assert label.text().endswith("…") and name.startswith(label.text()[:-1])
    assert label.full_text() == name and label.toolTip() == name
    label.resize(label.fontMetrics().horizontalAdvance(name) + 10, 20)
    assert label.text() == name and label.toolTip() == ""
    label.setText("short")
    assert label.text() == "short" and label.full_text() == "short"


def test_an_empty_state_gives_its_wrapped_text_full_height_and_drops_its_icon_when_short(qtbot):
    from fgdesk.gui.style import apply_theme
    from fgdesk.gui.widgets import EmptyState

    from PySide6.QtWidgets import QApplication

    apply_theme(QApplication.instance())  # the style sheet's fonts are what made the text come out a line short
    text = "Press Train to start a run. Its loss, learning rate, speed and kNN accuracy are plotted here as it goes."
    from PySide6.QtWidgets import QWidget

    holder = QWidget()  # a child can be squeezed below its layout's minimum, as inside the app's window
    qtbot.addWidget(holder)
    holder.resize(500, 400)
    state = EmptyState("train", "No run yet", text, parent=holder, text_width=300)
    holder.show()
    state.resize(500, 400)
    qtbot.waitUntil(lambda: state.text_label.height() >= state.text_label.heightForWidth(300), timeout=2_000)
    assert state.text_label.heightForWidth(300) > 2 * state.text_label.fontMetrics().lineSpacing()  # it wraps
    assert state.icon_label.isVisible()
    # A short window: the icon gives way, and headline and text do not overlap.
    state.resize(500, 130)
    qtbot.waitUntil(lambda: not state.icon_label.isVisible(), timeout=2_000)
    assert state.title_label.geometry().bottom() < state.text_label.geometry().top()
    state.resize(500, 400)
    qtbot.waitUntil(state.icon_label.isVisible, timeout=2_000)
