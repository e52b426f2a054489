"""Code exported from chapters (#@save cells) into dgm: the export tool and drift checks."""

from __future__ import annotations

import ast
import textwrap

import pytest

from tools import export

CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A chapter

    ## Squares

    ```{code-cell} ipython3
    #@save
    import math


    def square(x):
        """x times x."""
        return x * x
    ```

    ```{code-cell} ipython3
    print(square(3))  # not exported
    ```

    ## Roots

    ```{code-cell} ipython3
    #@save
    class Root:
        """Square roots.

        Longer text.
        """

        def __call__(self, x):
            return math.sqrt(x)
    ```
    ''')


@pytest.fixture
def chapter(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ch.md").write_text(CHAPTER)
    return tmp_path


def test_exports_marked_cells_in_order_with_their_location(chapter):
    text = export.render("book/ch.md", "Toy module.", root=chapter)
    assert "not exported" not in text
    assert not any(line.startswith(export.MARK) for line in text.splitlines())
    namespace = {}
    exec(compile(text, "exported", "exec"), namespace)
    assert namespace["square"](4) == 16 and namespace["Root"]()(9) == 3
    assert namespace["square"].__doc__.splitlines()[0] == "x times x."
    assert 'Defined in book/ch.md, section "Squares".' in namespace["square"].__doc__
    assert 'Defined in book/ch.md, section "Roots".' in namespace["Root"].__doc__
    assert "Longer text." in namespace["Root"].__doc__
    assert text.startswith('"""Toy module.') and "do not edit" in text


def test_an_exported_definition_needs_a_docstring(chapter):
    path = chapter / "book" / "ch.md"
    path.write_text(CHAPTER.replace('    """x times x."""\n', ""))
    with pytest.raises(ValueError, match="square"):
        export.render("book/ch.md", "Toy module.", root=chapter)


def test_a_chapter_listed_for_export_must_export_something(chapter):
    path = chapter / "book" / "ch.md"
    path.write_text(CHAPTER.replace("#@save\n", ""))
    with pytest.raises(ValueError, match="no cells marked"):
        export.render("book/ch.md", "Toy module.", root=chapter)


@pytest.mark.parametrize("source", sorted(export.EXPORTS))
def test_exported_module_matches_its_chapter(source):
    module, doc = export.EXPORTS[source]
    path = export.ROOT / module
    assert path.exists() and path.read_text() == export.render(source, doc), (
        f"{module} is out of date with {source}: run `make notebooks` and commit the result"
    )


def test_a_one_line_docstring_with_non_ascii_characters_is_opened_correctly():
    """ast's column offsets count UTF-8 bytes: a '±' must not shift where the docstring is cut."""
    code = 'def f(x):\n    """Shift by ±1 pixel."""\n    return x\n'
    out = export._add_location(code, "Defined in here.")
    assert '"""Shift by ±1 pixel.\n\n    Defined in here.\n    """' in out
    ast.parse(out)
