"""The row loader every data source goes through: .jsonl and .parquet files, each row checked against its type
(multiple_choice, pairs, generation) and the fields its template names; every bad row reported as FILE:LINE."""
from __future__ import annotations

import json
import string
from pathlib import Path

from raycf.data.chat import conversation_problem, is_conversation
from raycf.errors import DataError, did_you_mean


TYPES = ("multiple_choice", "pairs", "generation")


# Fields each row type must carry (beyond those its template names).
REQUIRED = {"multiple_choice": ("choices", "answer"), "pairs": ("sent_more", "sent_less", "bias_type"),
            "generation": ("instruction", "input", "output")}


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def infer_type(row: dict) -> str | None:
    if is_conversation(row):
        return "generation"
    if "choices" in row:
        return "multiple_choice"
    if "sent_more" in row:
        return "pairs"
    if "instruction" in row:
        return "generation"
    return None


def check_row(row, type: str, fields=()) -> str | None:
    """The problem with one row (and its fix), or None when it is fine."""
    if not isinstance(row, dict):
        return f"a row must be a JSON object, got {type_name(row)}; write one {{...}} object per line"
    if type == "generation" and is_conversation(row):  # the messages or ShareGPT format (raycf.data.chat)
        return conversation_problem(row)
    need = list(dict.fromkeys([*fields, *REQUIRED[type]]))
    missing = [f for f in need if f not in row]
    if missing:
        return (f"row has no field {', '.join(repr(m) for m in missing)} (it has {', '.join(row) or 'none'}); "
                f"a {type} row needs {', '.join(need)}")
    if type == "multiple_choice":
        choices, answer = row["choices"], row["answer"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return f"'choices' is {choices!r}; give a list of strings, e.g. [\"yes\", \"no\"]"
        if len(choices) < 2:
            return f"'choices' has {len(choices)} item(s); give at least 2 choices"
        if not isinstance(answer, int) or isinstance(answer, bool):
            return f"'answer' is {answer!r}; give the 0-based index of the correct choice (an integer)"
        if not 0 <= answer < len(choices):
            return (f"'answer' is {answer} but 'choices' has {len(choices)} items; "
                    f"give the 0-based index of the correct choice (0..{len(choices) - 1})")
    if type == "generation":
        bad = [f for f in REQUIRED["generation"] if not isinstance(row[f], str)]
        if bad:
            return (f"{', '.join(f'{b!r} is {type_name(row[b])} {row[b]!r}' for b in bad)}; give string(s) (in JSON: "
                f"quoted; in parquet: a string column)")
        refs = row.get("references")
        if refs is not None and (not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs)):
            return "'references' must be a non-empty list of strings; give [\"...\"] or leave the field out"
    if type == "pairs" and not all(isinstance(row[f], str) for f in REQUIRED["pairs"]):
        return "'sent_more', 'sent_less' and 'bias_type' must be strings; quote the values in the JSON"
    return None


def type_name(x) -> str:
    return {dict: "object", list: "list", str: "string", int: "number", float: "number",
            bool: "boolean", type(None): "null"}.get(type(x), type(x).__name__)


MAX_ERRORS = 20  # bad rows (or unreadable lines) listed before "... and N more"


def capped(errors: list[str], what: str = "bad rows") -> str:
    more = f"\n... and {len(errors) - MAX_ERRORS} more {what}" if len(errors) > MAX_ERRORS else ""
    return "\n".join(errors[:MAX_ERRORS]) + more


def _read_jsonl(path: Path) -> list[tuple[int, object]]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors) is still UTF-8
        data = data[3:]
    if not data.strip():
        raise DataError(f"{path}: file is empty; write one JSON object per line (see raycf/data/README.md)")
    if data.lstrip()[:1] == b"[":
        raise DataError(f"{path}: a JSON array; raycf reads JSON Lines: one complete JSON object per line, no "
                        f"enclosing [ ] (e.g. python -c \"import json,sys; [print(json.dumps(r)) for r in "
                        f"json.load(open(sys.argv[1]))]\" FILE > FILE.jsonl)")
    rows, errors = [], []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.append(f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                          f"save the file as UTF-8")
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            errors.append(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); "
                          f"write one complete JSON object per line")
    if errors:
        raise DataError(capped(errors, "unreadable lines"))
    return rows


def _read_parquet(path: Path) -> list[tuple[int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a readable parquet file ({first}); write it again (e.g. "
                        f"pandas.DataFrame(rows).to_parquet(FILE)) or give a .jsonl file") from None
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{path}: file is empty; write at least one row (see raycf/data/README.md)")
    return list(enumerate(rows, start=1))


def missing_field_problems(path: Path, lines: list, fields) -> list[str]:
    """Template fields that no row has: one line per field for the whole file, not one per row."""
    dicts = [row for _, row in lines if isinstance(row, dict)]
    absent = [f for f in fields if dicts and all(f not in row for row in dicts)]
    return [f"{path}: the template names field {f!r}, which no row has (rows have: "
            f"{', '.join(sorted(set().union(*dicts))) or 'none'}); fix the template or add the field to the rows"
            for f in absent]


def load_rows(path, type: str | None = None, fields=(), numbered: bool = False) -> list:
    """Validated rows of a .jsonl (one JSON object per line) or .parquet file.

    type: multiple_choice | pairs | generation, or None to infer it from the first row.
    fields: extra fields every row must have (those a template names). Every bad row is reported in
    one DataError, each as `FILE:LINE: problem; fix` (LINE is 1-based; the row number for parquet).
    numbered: return (LINE, row) pairs, for checks that report a line of their own.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (relative paths start at the working directory)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a .jsonl or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise DataError(f"{path}: unknown file type {suffix!r}; give a .jsonl or .parquet file")
    lines = _read_parquet(path) if suffix == ".parquet" else _read_jsonl(path)
    if type is None:
        first = lines[0][1]
        type = infer_type(first) if isinstance(first, dict) else None
        if type is None:
            raise DataError(f"{path}:{lines[0][0]}: cannot tell the row type; a row needs 'choices' "
                            f"(multiple_choice), 'sent_more' (pairs) or 'instruction' (generation)")
    if type not in TYPES:
        raise DataError(f"row type {type!r} is unknown{did_you_mean(type, sorted(TYPES), n=3, cutoff=0.7)}")
    absent = missing_field_problems(path, lines, fields)
    if absent:
        raise DataError("\n".join(absent))
    errors = [f"{path}:{n}: {problem}" for n, row in lines
              if (problem := check_row(row, type, fields)) is not None]
    if errors:
        raise DataError(capped(errors))
    return lines if numbered else [row for _, row in lines]
