"""The runner writes its result document without importing json: the same text json.dumps gives."""

from __future__ import annotations

import json

from sandq.sandbox.runner import to_json


def test_the_report_is_the_json_that_json_dumps_writes() -> None:
    names = ["plain.txt", 'quote"back\\slash',
             "ctl\x00\x1f\x7f\n\t", "é ü 😀", "\udcff undecodable", "\u2028"]
    document = {
        "status": "succeeded",
        "exit_code": -1,
        "stdout_truncated": False,
        "output_files_truncated": True,
        "output_files": [{"name": name, "content": "QUJD+/=", "mime_type": "text/plain"} for name in names],
    }
    assert to_json(document) == json.dumps(document)
    assert json.loads(to_json(document)) == document
