import pytest

from shared.tables import markdown_table


def test_markdown_table_aligns_and_checks_its_shape():
    assert markdown_table(["arm", "top-5 %"], [("jepa", 50.3), ("vlm", 62.0)]) == [
        "| arm | top-5 % |", "|---|---:|", "| jepa | 50.3 |", "| vlm | 62.0 |"]
    assert markdown_table(["a", "b"], [], "rl")[1] == "|---:|---|"
    with pytest.raises(ValueError, match="a row of 1 cells under 2 columns"):
        markdown_table(["a", "b"], [("x",)])
    with pytest.raises(ValueError, match="2 columns but alignment"):
        markdown_table(["a", "b"], [], "l")
