"""Batch files: one request per JSONL line in, one result per line out, resumable by line id."""

from __future__ import annotations

import json
from pathlib import Path

from sandq.client.batch_file import finished_ids, invalid_line_result, read_lines, result_line, sort_output
from sandq.contract import ExecutionResult, Status


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), "utf-8")
    return path


def test_each_line_gets_an_id_from_the_file_and_its_number(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", '{"code": "print(1)"}', "", '{"code": "print(2)", "tenant": "a"}')
    first, second = read_lines(src)
    assert (first.number, second.number) == (1, 3)  # blank lines keep the numbering of the file
    assert first.request == {"code": "print(1)"} and second.request == {"code": "print(2)", "tenant": "a"}
    assert [line.id for line in read_lines(src)] == [first.id, second.id]  # the same again: resumable
    other = _write(tmp_path / "other.jsonl", '{"code": "print(1)"}')
    assert read_lines(other)[0].id != first.id  # another file, other ids


def test_a_tenant_given_for_the_batch_overrides_each_line(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", '{"code": "1", "tenant": "a"}', '{"code": "2"}')
    assert [line.request["tenant"] for line in read_lines(src, "b") if line.request] == ["b", "b"]


def test_a_line_that_is_not_a_json_object_is_rejected_with_its_number(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", "not json", "[1, 2]", '{"code": "ok"}')
    bad, array, good = read_lines(src)
    assert bad.request is None and bad.error is not None and "line 1" in bad.error
    assert array.request is None and array.error is not None and "line 2" in array.error
    assert good.error is None
    result = invalid_line_result(bad)
    assert (result.id, result.status, result.attempts) == (bad.id, Status.REJECTED, 0)
    assert result.error == bad.error


def test_finished_ids_drops_a_cut_off_last_line(tmp_path: Path) -> None:
    done = ExecutionResult(id="a", status=Status.SUCCEEDED)
    out = tmp_path / "out.jsonl"
    out.write_text(result_line(1, done) + "\n" + '{"line": 2, "id": "b", "res', "utf-8")
    assert finished_ids(out) == {"a"}
    assert out.read_text("utf-8") == result_line(1, done) + "\n"  # cleaned: the next line starts anew
    assert finished_ids(tmp_path / "missing.jsonl") == set()


def test_the_output_is_sorted_by_input_line_and_counted_by_status(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rows = [
        (3, ExecutionResult(id="c", status=Status.FAILED)),
        (1, ExecutionResult(id="a", status=Status.SUCCEEDED)),
        (2, ExecutionResult(id="b", status=Status.SUCCEEDED)),
    ]
    out.write_text("".join(result_line(n, r) + "\n" for n, r in rows), "utf-8")
    assert sort_output(out) == {"succeeded": 2, "failed": 1}
    assert [json.loads(line)["line"] for line in out.read_text("utf-8").splitlines()] == [1, 2, 3]
