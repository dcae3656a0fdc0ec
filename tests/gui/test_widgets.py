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
