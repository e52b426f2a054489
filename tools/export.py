"""Export the code a chapter teaches into the dgm package (in the spirit of d2l's ``#@save``),
and generate each project task's template.py from its reference solution.

    python -m tools.export          # write every exported module (`make notebooks` runs it)
    python -m tools.export --check  # exit 1 and name the modules that are out of date

A code cell whose first line is ``#@save`` belongs to the package: its code (without that
line) is copied, in the order of the chapter, into the module that :data:`EXPORTS` names for
the chapter. Each exported function and class gets a last docstring line saying where in the
book it is defined, so a reader of the package can go back to the derivation. The chapter is
the single source; the generated module says so at its top and is never edited by hand.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import jupytext

from tools.generated import sync

ROOT = Path(__file__).resolve().parents[1]
MARK = "#@save"

#: chapter source -> (module path, one-line module description)
EXPORTS: dict[str, tuple[str, str]] = {
    "book/01_flows.md": ("dgm/flows.py", "Normalizing flows: layers with forward/inverse and log-determinants, and flow models."),
    "book/02_vi.md": ("dgm/vi.py", "Variational inference: the Gaussian KL, alpha-divergences, the linear Gaussian model, EM for Gaussian mixtures, CAVI, gradient estimators (Gumbel-softmax too), black-box and stochastic VI, HMC, encoders."),
    "book/03_vae.md": ("dgm/vae.py", "Variational autoencoders: discretized logistic likelihood, the VAE for the digits, its training loss."),
    "book/04_gans.md": ("dgm/gans.py", "Generative adversarial networks: the GAN losses, MLP generator and discriminator, gradient penalties, the training loop."),
    "book/05_diffusion.md": ("dgm/diffusion.py", "Denoising diffusion: schedules, the forward process and its posterior, samplers (DDPM, DDIM), Langevin dynamics, the digits DDPM with a valid likelihood bound."),
    "book/06_diffusion_design.md": ("dgm/diffusion_design.py", "Diffusion in practice: classifier guidance with a noise-conditional classifier, EDM's preconditioning and samplers (Euler, Heun), latent diffusion on a VAE's codes, masked (absorbing-state) discrete diffusion."),
    "book/07_flow_matching.md": ("dgm/flow_matching.py", "Flow matching: continuous normalizing flows (exact and Hutchinson divergences, ODE solvers, log-densities), Gaussian probability paths, conditional flow matching with independent, optimal-transport or fixed couplings, the digits bound."),
}


def _section(md: str, current: str) -> str:
    for line in md.splitlines():
        m = re.match(r"^(#{1,3})\s+(.*)", line)
        if m:
            current = m.group(2).strip()
    return current


def _add_location(code: str, where: str) -> str:
    """Append 'Defined in ...' to the docstring of every public top-level def and class in ``code``."""
    tree = ast.parse(code)
    lines = code.splitlines()
    edits = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue  # private helpers need no docstring
        doc = node.body[0] if node.body else None
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            raise ValueError(f"exported {node.name!r} ({where}) needs a docstring")
        edits.append((doc.end_lineno - 1, doc.end_col_offset, doc.col_offset))
    for line_no, end_col, indent in sorted(edits, reverse=True):
        line = lines[line_no]
        end_col = len(line.encode("utf-8")[:end_col].decode("utf-8"))  # ast counts UTF-8 bytes, not characters
        quote = line[end_col - 3 : end_col]
        head = line[: end_col - 3]
        if head.strip():  # one-line docstring: break it open
            lines[line_no] = f"{head}\n\n{' ' * indent}{where}\n{' ' * indent}{quote}{line[end_col:]}"
        else:
            lines[line_no] = f"{' ' * indent}{where}\n{line}"
    return "\n".join(lines)


def render(source: str, module_doc: str, root: Path = ROOT) -> str:
    """The exported module of ``source`` as text."""
    nb = jupytext.read(root / source)
    section, parts = "", []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            section = _section(cell.source, section)
        elif cell.cell_type == "code" and cell.source.lstrip().startswith(MARK):
            code = cell.source.lstrip().split("\n", 1)[1] if "\n" in cell.source.strip() else ""
            where = f"Defined in {source}, section \"{section}\"."
            parts.append(_add_location(code.strip("\n"), where))
    if not parts:
        raise ValueError(f"{source} has no cells marked {MARK}")
    header = (
        f'"""{module_doc}\n\n'
        f"Generated from {source} by tools/export.py: do not edit. Change the chapter's cells\n"
        f"marked {MARK} and run `make notebooks`.\n"
        '"""\n\n'
    )
    return header + "\n\n\n".join(parts) + "\n"


def project_templates(root: Path = ROOT) -> dict[Path, str]:
    """template.py of every project task, generated from its reference/solution.py (see dgm.grade)."""
    from dgm.grade import make_template

    return {p.parents[1] / "template.py": make_template(p.read_text())
            for p in sorted(root.glob("exercises/projects/*/reference/solution.py"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale modules instead of writing them")
    args = parser.parse_args(argv)
    outputs = {Path(module): render(source, doc) for source, (module, doc) in EXPORTS.items()}
    outputs.update({p.relative_to(ROOT): text for p, text in project_templates().items()})
    status = sync(outputs, ROOT, args.check)
    if not args.check:
        print(f"{len(outputs)} generated modules (chapter exports and project templates) are up to date")
    return status


if __name__ == "__main__":
    sys.exit(main())
