"""load_rows: user files in the documented schema; every bad row named by file, line and fix."""
import json

import pytest

from raycf.data import DataError, load_rows


def write(tmp_path, text, name="rows.jsonl", mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_good_rows_of_each_type(tmp_path):
    mc = {"question": "Hot or cold?", "choices": ["hot", "cold"], "answer": 0}
    pair = {"sent_more": "A b.", "sent_less": "C b.", "bias_type": "age"}
    gen = {"instruction": "Say hi.", "input": "", "output": "hi", "references": ["hi", "hello"]}
    for row in (mc, pair, gen):
        p = write(tmp_path, json.dumps(row) + "\n\n")  # blank lines are skipped
        assert load_rows(p) == [row]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "x", "choices": ["a", "b"], "answer": 1},
                                         {"q": "y", "choices": ["a", "b"], "answer": 2}]), p)
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value) == (f"{p}:2: 'answer' is 2 but 'choices' has 2 items; "
                            f"give the 0-based index of the correct choice (0..1)")


def test_missing_field_names_file_line_and_fix(tmp_path):
    p = write(tmp_path, '{"question": "q", "choices": ["a", "b"], "answer": 0}\n'
                        '{"question": "q", "choices": ["a", "b"]}\n')
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value) == (f"{p}:2: row has no field 'answer' (it has question, choices); "
                            f"a multiple_choice row needs choices, answer")


def test_template_fields_are_required(tmp_path):
    p = write(tmp_path, '{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(DataError) as e:
        load_rows(p, "multiple_choice", fields=["question"])
    assert str(e.value) == (f"{p}:2: row has no field 'question' (it has choices, answer); "
                            f"a multiple_choice row needs question, choices, answer")
    # a field that no row has is the template's mistake: one line for the file, not one per row
    p = write(tmp_path, '{"choices": ["a", "b"], "answer": 0}\n' * 30)
    with pytest.raises(DataError) as e:
        load_rows(p, "multiple_choice", fields=["question", "choices"])
    assert str(e.value) == (f"{p}: the template names field 'question', which no row has (rows have: answer, "
                            f"choices); fix the template or add the field to the rows")


def test_short_choices_and_answer_out_of_range_all_reported(tmp_path):
    p = write(tmp_path, '{"q": "x", "choices": ["only"], "answer": 0}\n'
                        '{"q": "x", "choices": ["a", "b", "c"], "answer": 3}\n'
                        '{"q": "x", "choices": ["a", "b"], "answer": "1"}\n')
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value).splitlines() == [
        f"{p}:1: 'choices' has 1 item(s); give at least 2 choices",
        f"{p}:2: 'answer' is 3 but 'choices' has 3 items; give the 0-based index of the correct choice (0..2)",
        f"{p}:3: 'answer' is '1'; give the 0-based index of the correct choice (an integer)",
    ]


def test_not_utf8(tmp_path):
    p = write(tmp_path, b'{"q": "ok", "choices": ["a", "b"], "answer": 0}\n{"q": "caf\xe9", "choices": ["a", "b"], "answer": 0}\n')
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value) == f"{p}:2: not UTF-8 (byte 0xe9 at column 11); save the file as UTF-8"


def test_empty_file(tmp_path):
    p = write(tmp_path, "\n  \n")
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value) == f"{p}: file is empty; write one JSON object per line (see raycf/data/README.md)"


def test_malformed_json(tmp_path):
    p = write(tmp_path, '{"q": "x", "choices": ["a", "b"], "answer": 0}\n{"q": "x" "choices": ["a"]}\n')
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value) == (f"{p}:2: malformed JSON (Expecting ',' delimiter at column 11); "
                            f"write one complete JSON object per line")


def test_not_an_object_and_unknown_type(tmp_path):
    p = write(tmp_path, '{"sent_more": "a", "sent_less": "b", "bias_type": "age"}\n["a", "b"]\n')
    with pytest.raises(DataError) as e:
        load_rows(p)
    assert str(e.value) == f"{p}:2: a row must be a JSON object, got list; write one {{...}} object per line"
    p = write(tmp_path, '{"text": "hello"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:1: cannot tell the row type; a row needs 'choices'"):
        load_rows(p)
    with pytest.raises(DataError, match=r"row type 'pair' is unknown; did you mean 'pairs'\?"):
        load_rows(p, "pair")
    with pytest.raises(DataError, match=r"unknown file type '.csv'; give a .jsonl or .parquet file"):
        load_rows(write(tmp_path, "a,b\n", name="rows.csv"))


def test_generation_rows(tmp_path):
    p = write(tmp_path, '{"instruction": "x", "input": 3, "output": "y"}\n'
                        '{"instruction": "x", "input": "", "output": "y", "references": []}\n')
    with pytest.raises(DataError) as e:
        load_rows(p, "generation")
    assert str(e.value).splitlines() == [
        f"{p}:1: 'input' is number 3; give string(s) (in JSON: quoted; in parquet: a string column)",
        f"{p}:2: 'references' must be a non-empty list of strings; give [\"...\"] or leave the field out"]
