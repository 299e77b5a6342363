"""Reading GenTD26's request and cold-start files: all or nothing, errors naming the file, line and field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.request_trace import TraceError, read_cold_starts, read_requests
from tests.unit.autoscale_traces import HEADER, T0, request_line, write_cold_starts, write_requests


def test_reads_plain_and_gzip_alike_sorted_with_models_indexed(tmp_path: Path) -> None:
    rows = [(30.0, 12.0, "M0002"), (0.0, 20.0, "M0001"), (60.0, 5.0, "M0002")]
    plain = read_requests(write_requests(tmp_path / "r.csv", rows))
    packed = read_requests(write_requests(tmp_path / "r.csv.gz", rows))
    for t in (plain, packed):
        assert t.models == ("M0001", "M0002")
        assert list(t.arrival - T0) == [0.0, 30.0, 60.0]
        assert list(t.service) == [20.0, 12.0, 5.0]
        assert list(t.model) == [0, 1, 1]


def test_a_request_without_base_model_is_counted_not_replayed(tmp_path: Path) -> None:
    line = request_line(10, 5, "M0001").rsplit(",", 2)[0] + ",,0"
    t = read_requests(write_requests(tmp_path / "r.csv", [(0, 5, "M0001")], extra=[line]))
    assert len(t) == 1 and t.skipped == 1


@pytest.mark.parametrize(("bad_line", "field"), [
    ("2024-11-15 25:00:00,TXT_2_IMG,SUCCEED,3.0,G0,1,,1,30,M0001,0", "gmt_create"),
    ("2024-11-15 10:00:00,TXT_2_IMG,SUCCEED,abc,G0,1,,1,30,M0001,0", "exec_time_seconds"),
    ("2024-11-15 10:00:00,TXT_2_IMG,SUCCEED,-4,G0,1,,1,30,M0001,0", "exec_time_seconds"),
    ("2024-11-15 10:00:00,TXT_2_IMG,SUCCEED,nan,G0,1,,1,30,M0001,0", "exec_time_seconds"),
])
def test_a_malformed_request_names_file_line_and_field(tmp_path: Path, bad_line: str, field: str) -> None:
    path = write_requests(tmp_path / "r.csv", [(0, 5, "M0001"), (9, 5, "M0001")], extra=[bad_line])
    with pytest.raises(TraceError) as caught:
        read_requests(path)
    assert str(caught.value).startswith(f"{path}, line 4, field {field!r}")


def test_a_short_line_and_a_missing_column_are_refused(tmp_path: Path) -> None:
    path = write_requests(tmp_path / "r.csv", [(0, 5, "M0001")], extra=["2024-11-15 10:00:00,TXT_2_IMG"])
    with pytest.raises(TraceError, match=r"r\.csv, line 3: 2 fields, the header has 11"):
        read_requests(path)
    headless = tmp_path / "h.csv"
    headless.write_text(HEADER.replace("exec_time_seconds", "exec") + "\n")
    with pytest.raises(TraceError, match=r"h\.csv, line 1, field 'exec_time_seconds': missing from the header"):
        read_requests(headless)


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read it"):
        read_requests(tmp_path / "absent.csv")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(TraceError, match="not a CSV file"):
        read_requests(tmp_path / "broken.gz")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TraceError, match="empty"):
        read_cold_starts(tmp_path / "empty.csv")


def test_cold_starts_in_seconds_and_bad_values_refused(tmp_path: Path) -> None:
    assert np.allclose(read_cold_starts(write_cold_starts(tmp_path / "c.csv", [22700, 42000])), [22.7, 42.0])
    for bad in ("0", "fast"):
        path = tmp_path / f"c{bad}.csv"
        path.write_text(f"timestamp_anon,value,container_ip\n1,1000,a\n2,{bad},b\n")
        with pytest.raises(TraceError, match=r"line 3, field 'value'"):
            read_cold_starts(path)
