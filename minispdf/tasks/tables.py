"""The official tabular formats: E2E (CSV, columns ``mr,ref``) and Curation Corpus (CSV or Parquet,
columns ``article_content,summary``); one row per reference, grouped by input (see ``core.group``).

An E2E meaning representation (MR) is ``"name[The Copper Kettle], eatType[pub], ..."``:
:func:`parse_mr` reads one, :func:`format_mr` writes one in the official slot order.
"""

from __future__ import annotations

import re
from pathlib import Path

from minispdf.errors import MiniSPDFError, one_line

from .core import Example, NoReferencesError, clean, group, require_file

_MR_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")

#: The E2E slots, in the order the official files write them.
E2E_SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly",
             "near")


def parse_mr(mr: str) -> dict[str, str]:
    """Parse an E2E meaning representation ``"name[X], eatType[pub]"`` into ``{slot: value}``."""
    return {m.group(1): m.group(2) for m in _MR_SLOT.finditer(mr)}


def format_mr(slots: dict[str, str]) -> str:
    """Write ``{slot: value}`` in E2E's format, slots in the official order (unknown ones last)."""
    order = {s: i for i, s in enumerate(E2E_SLOTS)}
    keys = sorted(slots, key=lambda s: order.get(s, len(order)))
    return ", ".join(f"{k}[{slots[k]}]" for k in keys)


def _read_table(path: Path, what: str):
    """Read a CSV or Parquet file into a pandas DataFrame of strings (empty cells stay '')."""
    import pandas as pd

    require_file(path, what)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                             encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise MiniSPDFError(f"{path} is empty; pass a file in the {what} format with a header "
                            f"row and data") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise MiniSPDFError(
            f"cannot read {path} as "
            f"{'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} "
            f"({one_line(e)}); pass a valid file in the {what} format"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _pick_columns(df, path: Path, wanted: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Map each logical column to the first of its accepted names present in ``df``."""
    found = {}
    missing = []
    for logical, names in wanted.items():
        hit = next((n for n in names if n in df.columns), None)
        if hit is None:
            missing.append(names[0])
        found[logical] = hit
    if missing:
        expected = ", ".join(names[0] for names in wanted.values())
        raise MiniSPDFError(
            f"{path} is missing column(s) {', '.join(missing)}: expected columns {expected}, "
            f"found {', '.join(map(str, df.columns)) or 'none'}; pass a file with those columns"
        )
    return found


def _table_pairs(path: Path, what: str, in_cols: tuple[str, ...],
                 ref_cols: tuple[str, ...]) -> list[tuple[str, str]]:
    df = _read_table(path, what)
    # inputs only, as in the official testset.csv
    if len(df.columns) and set(df.columns) <= set(in_cols):
        fix = ("use testset_w_refs.csv" if path.name.lower() == "testset.csv"
               else "use the file with references")
        raise NoReferencesError(
            f"{path} has inputs ({'/'.join(in_cols)}) but no reference column "
            f"({'/'.join(ref_cols)}), "
            f"so it cannot be scored; {fix}"
        )
    cols = _pick_columns(df, path, {"input": in_cols, "ref": ref_cols})
    if len(df) == 0:
        raise MiniSPDFError(f"{path} has a header but no rows; pass a file in the {what} format "
                            f"that has data in it")
    inputs = [clean(v) for v in df[cols["input"]].tolist()]
    refs = [clean(v) for v in df[cols["ref"]].tolist()]
    for i, (inp, ref) in enumerate(zip(inputs, refs), start=1):
        if not inp:
            raise MiniSPDFError(
                f"{path}: data row {i} has an empty or missing '{cols['input']}' cell; fill it in "
                f"or delete the row"
            )
        if not ref:
            raise MiniSPDFError(
                f"{path}: data row {i} has an empty or missing reference ('{cols['ref']}' cell); "
                "fill it in or delete the row"
            )
    return list(zip(inputs, refs))


_E2E_COLS = (("mr", "meaning_representation"), ("ref", "human_reference"))
_CURATION_COLS = (("article_content", "article"), ("summary",))


def load_e2e_file(path: Path) -> list[Example]:
    return group(_table_pairs(path, "E2E CSV (mr,ref)", *_E2E_COLS))


def load_curation_file(path: Path) -> list[Example]:
    return group(_table_pairs(path, "Curation CSV/Parquet (article_content,summary)",
                              *_CURATION_COLS))
