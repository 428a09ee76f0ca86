"""JournalSource on a journal tree in tmp_path (fill-journal.md, section 3), and raw_text.

No database, no Dagster.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from competition_pipeline.fills import journal as journal_module
from competition_pipeline.fills.journal import SYMLINK_NOTE, JournalSource, scan
from competition_pipeline.fills.rows import raw_text
from competition_pipeline.fills.source import (
    MAX_LINE,
    LongLine,
    RawBatch,
    ReadStats,
    SourceError,
)
from competition_pipeline.fills.windows import Window

WINDOW = Window.from_key("2026-03-31-14:00")
PREFIX = "date=2026-03-31/hour=14"


def hour_dir(root: Path, window: Window = WINDOW) -> Path:
    path = root / f"date={window.start:%Y-%m-%d}" / f"hour={window.start:%H}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lines(prefix: str, count: int) -> list[bytes]:
    return [f'{{"type":"Heartbeat","n":"{prefix}-{i}"}}'.encode() for i in range(1, count + 1)]


def write_plain(directory: Path, name: str, records: list[bytes], tail: bytes = b"") -> Path:
    path = directory / name
    path.write_bytes(b"".join(record + b"\n" for record in records) + tail)
    return path


def write_gz(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def read(source: JournalSource, window: Window = WINDOW) -> tuple[list[RawBatch], ReadStats]:
    stats = ReadStats()
    batches = list(source.read_window(window, stats))
    return batches, stats


def flat(batches: list[RawBatch]) -> list[tuple[str, int, bytes]]:
    return [(batch.origin, no, data) for batch in batches for no, data in batch.records]


# --- listing ------------------------------------------------------------------------------------


def test_reads_only_the_windows_segments_in_name_order(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "seg-0010.jsonl", lines("c", 1))
    write_gz(here, "seg-0002.jsonl.gz", b"".join(x + b"\n" for x in lines("b", 2)))
    write_plain(here, "seg-0001.jsonl", lines("a", 1))
    write_plain(hour_dir(tmp_path, Window.from_key("2026-03-31-15:00")), "seg-0000.jsonl", [b"x"])
    write_plain(hour_dir(tmp_path, Window.from_key("2026-03-30-14:00")), "seg-0000.jsonl", [b"y"])

    batches, stats = read(JournalSource(tmp_path))
    assert flat(batches) == [
        (f"{PREFIX}/seg-0001.jsonl", 1, lines("a", 1)[0]),
        (f"{PREFIX}/seg-0002.jsonl.gz", 1, lines("b", 2)[0]),
        (f"{PREFIX}/seg-0002.jsonl.gz", 2, lines("b", 2)[1]),
        (f"{PREFIX}/seg-0010.jsonl", 1, lines("c", 1)[0]),
    ]
    assert stats.segments == 3
    assert stats.ignored == []
    assert stats.incomplete_tails == 0


def test_segments_lists_relative_paths_and_closed_flag(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "b.jsonl", [b"{}"])
    write_gz(here, "a.jsonl.gz", b"{}\n")
    segments, ignored = JournalSource(tmp_path).segments(WINDOW)
    assert [s.relative for s in segments] == [f"{PREFIX}/a.jsonl.gz", f"{PREFIX}/b.jsonl"]
    assert [s.closed for s in segments] == [True, False]
    assert segments[1].size == 3
    assert ignored == []


def test_other_entries_are_ignored_and_reported_never_read(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "seg-1.jsonl", lines("ok", 2))
    poison = [b'{"type":"OrderFilled","poison":true}']
    others = (
        "notes.txt",
        ".hidden.jsonl",
        ".hidden.jsonl.gz",
        "seg-2.jsonl.tmp",
        "seg-3.json",
        "seg-4.jsonl.gz.part",
        "seg-5.JSONL",
    )
    for name in others:
        write_plain(here, name, poison)
    (here / "subdir").mkdir()
    write_plain(here / "subdir", "nested.jsonl", poison)
    (here / "dir.jsonl").mkdir()

    batches, stats = read(JournalSource(tmp_path))
    assert [data for _, _, data in flat(batches)] == lines("ok", 2)
    assert {origin for origin, _, _ in flat(batches)} == {f"{PREFIX}/seg-1.jsonl"}
    assert sorted(stats.ignored) == sorted(
        f"{PREFIX}/{name}"
        for name in (
            *others,
            "subdir",
            "dir.jsonl",
        )
    )
    assert stats.segments == 1


def test_symlinked_segment_is_not_read(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_bytes(b'{"type":"Heartbeat"}\n')
    try:
        (here / "link.jsonl").symlink_to(elsewhere)
    except OSError:  # pragma: no cover - no symlinks on this file system
        pytest.skip("symlinks are not supported here")
    batches, stats = read(JournalSource(tmp_path))
    assert flat(batches) == []
    assert stats.ignored == [f"{PREFIX}/link.jsonl{SYMLINK_NOTE}"]


def outside_tree(tmp_path: Path) -> Path:
    """A directory outside the journal root holding a secret in journal form."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_bytes(b"SECRET-LINE-1\nSECRET-LINE-2\n")
    return outside


@pytest.mark.parametrize("linked", ["hour", "date"])
def test_a_symlinked_directory_is_named_and_nothing_is_read_through_it(
    tmp_path: Path, linked: str
) -> None:
    """Issue 33, 1: a run of the partition read the files a symlinked hour (or date) directory
    pointed at and stored them as rejects; the same rule as the sensor's scan now applies."""
    root = tmp_path / "journal"
    root.mkdir()
    outside = outside_tree(tmp_path)
    if linked == "hour":
        (root / "date=2026-03-31").mkdir()
        (root / PREFIX).symlink_to(outside, target_is_directory=True)
        name = PREFIX
    else:
        (outside / "hour=14").mkdir()
        (outside / "hour=14" / "secret.jsonl").write_bytes(b"SECRET-LINE-1\n")
        (root / "date=2026-03-31").symlink_to(outside, target_is_directory=True)
        name = "date=2026-03-31"
    source = JournalSource(root)
    batches, stats = read(source)
    assert flat(batches) == []
    assert stats.ignored == [name + SYMLINK_NOTE]
    assert not source.has_data(WINDOW)
    assert scan(root) == ([], [name + SYMLINK_NOTE])


def test_a_segment_swapped_for_a_symlink_after_listing_is_not_opened(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "a.jsonl", lines("a", 1))
    source = JournalSource(tmp_path)
    segments, _ = source.segments(WINDOW)
    (here / "a.jsonl").unlink()
    (here / "a.jsonl").symlink_to(outside_tree(tmp_path) / "secret.jsonl")
    with pytest.raises(SourceError, match="cannot open segment"):
        list(source._read_segment(segments[0], ReadStats(), None, (0, 0)))


@pytest.mark.parametrize("chunk", [1000, 4096, 1 << 20])
@pytest.mark.parametrize("closed", [False, True])
def test_a_line_over_the_limit_is_a_long_line_its_neighbours_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, closed: bool
) -> None:
    """Issue 33, 5: a line over 64 KiB is kept as an excerpt, its length and sha256; the lines
    before and after it are read as usual, whatever the read chunk."""
    import hashlib

    monkeypatch.setattr(journal_module, "READ_CHUNK", chunk)
    here = hour_dir(tmp_path)
    long_line = b"x" * (3 * MAX_LINE + 17)
    exact = b"y" * MAX_LINE  # at the limit: an ordinary line
    data = b"\n".join([b"first", long_line, exact, b"last"]) + b"\n"
    if closed:
        write_gz(here, "a.jsonl.gz", data + long_line)  # and a long unterminated last line
    else:
        (here / "a.jsonl").write_bytes(data + long_line)  # an unterminated long tail waits
    batches, stats = read(JournalSource(tmp_path))
    records = [data for _, _, data in flat(batches)]
    expected_long = LongLine(
        long_line[:1024], len(long_line), hashlib.sha256(long_line).hexdigest()
    )
    assert records[0] == b"first" and records[2] == exact and records[3] == b"last"
    assert records[1] == expected_long
    if closed:
        assert records[4:] == [expected_long]
    else:
        assert len(records) == 4 and stats.incomplete_tails == 1
        # The offset stops at the unterminated line's start: it is read once it is complete.
        assert stats.positions[f"{PREFIX}/a.jsonl"]["bytes"] == len(data)


def test_line_numbers_are_one_based_per_segment(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "a.jsonl", lines("a", 3))
    write_gz(here, "b.jsonl.gz", b"".join(x + b"\n" for x in lines("b", 2)))
    write_plain(here, "c.jsonl", lines("c", 4))
    batches, _ = read(JournalSource(tmp_path))
    numbers: dict[str, list[int]] = {}
    for origin, no, _ in flat(batches):
        numbers.setdefault(origin.rsplit("/", 1)[1], []).append(no)
    assert numbers == {"a.jsonl": [1, 2, 3], "b.jsonl.gz": [1, 2], "c.jsonl": [1, 2, 3, 4]}


def test_blank_lines_are_yielded_so_that_they_are_counted(tmp_path: Path) -> None:
    write_plain(hour_dir(tmp_path), "a.jsonl", [b"{}", b"", b"{}"])
    batches, _ = read(JournalSource(tmp_path))
    assert [(no, data) for _, no, data in flat(batches)] == [(1, b"{}"), (2, b""), (3, b"{}")]


def test_bytes_read_counts_the_plain_segments_bytes(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    first = write_plain(here, "a.jsonl", lines("a", 5))
    second = write_plain(here, "b.jsonl", lines("b", 2), tail=b'{"partial')
    _, stats = read(JournalSource(tmp_path))
    assert stats.bytes_read == first.stat().st_size + second.stat().st_size


# --- incomplete tails and closed segments --------------------------------------------------------


def test_unterminated_tail_of_a_plain_segment_waits_for_completion(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    complete = lines("a", 2)
    path = write_plain(here, "a.jsonl", complete, tail=b'{"type":"Heart')
    source = JournalSource(tmp_path)

    batches, stats = read(source)
    assert [(no, data) for _, no, data in flat(batches)] == [(1, complete[0]), (2, complete[1])]
    assert stats.incomplete_tails == 1

    with path.open("ab") as handle:
        handle.write(b'beat","n":"late"}\n')
    batches, stats = read(source)
    assert [(no, data) for _, no, data in flat(batches)] == [
        (1, complete[0]),
        (2, complete[1]),
        (3, b'{"type":"Heartbeat","n":"late"}'),
    ]
    assert stats.incomplete_tails == 0


def test_a_plain_segment_that_is_only_a_fragment_yields_nothing(tmp_path: Path) -> None:
    write_plain(hour_dir(tmp_path), "a.jsonl", [], tail=b'{"type"')
    batches, stats = read(JournalSource(tmp_path))
    assert flat(batches) == []
    assert stats.incomplete_tails == 1
    assert stats.segments == 1


def test_last_line_of_a_gz_segment_without_newline_is_read(tmp_path: Path) -> None:
    records = lines("g", 3)
    write_gz(hour_dir(tmp_path), "a.jsonl.gz", b"\n".join(records))
    batches, stats = read(JournalSource(tmp_path))
    assert [(no, data) for _, no, data in flat(batches)] == [
        (1, records[0]),
        (2, records[1]),
        (3, records[2]),
    ]
    assert stats.incomplete_tails == 0


def test_gz_segment_with_final_newline_has_no_extra_line(tmp_path: Path) -> None:
    records = lines("g", 2)
    write_gz(hour_dir(tmp_path), "a.jsonl.gz", b"".join(r + b"\n" for r in records))
    batches, stats = read(JournalSource(tmp_path))
    assert [data for _, _, data in flat(batches)] == records
    assert stats.bytes_read == sum(len(r) + 1 for r in records)


def _corrupt_bodies() -> dict[str, bytes]:
    data = b"".join(r + b"\n" for r in lines("z", 200))
    good = gzip.compress(data, mtime=0)
    header = good[:10]
    flipped = bytearray(good)
    flipped[len(good) - 4] ^= 0xFF  # the stored length (ISIZE) no longer matches
    crc = bytearray(good)
    crc[len(good) - 8] ^= 0xFF  # the stored CRC no longer matches
    return {
        "garbage_body": header + b"\xff" * 200,
        "truncated_body": good[: len(good) // 2],
        "truncated_trailer": good[:-3],
        "bad_crc": bytes(crc),
        "bad_length": bytes(flipped),
        "not_gzip_at_all": data,
    }


@pytest.mark.parametrize("kind", sorted(_corrupt_bodies()))
def test_corrupt_gz_segment_raises_a_non_retryable_source_error(tmp_path: Path, kind: str) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "a.jsonl", lines("ok", 1))
    (here / "b.jsonl.gz").write_bytes(_corrupt_bodies()[kind])
    with pytest.raises(SourceError) as caught:
        read(JournalSource(tmp_path))
    assert caught.value.retryable is False
    assert f"{PREFIX}/b.jsonl.gz" in str(caught.value)


# --- missing directories ------------------------------------------------------------------------


def test_missing_journal_root_raises_source_error(tmp_path: Path) -> None:
    source = JournalSource(tmp_path / "nope")
    with pytest.raises(SourceError) as caught:
        read(source)
    assert "nope" in str(caught.value)
    with pytest.raises(SourceError):
        source.segments(WINDOW)


def test_journal_root_that_is_a_file_raises_source_error(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_text("not a directory")
    with pytest.raises(SourceError):
        read(JournalSource(root))


def test_missing_hour_directory_yields_nothing(tmp_path: Path) -> None:
    write_plain(hour_dir(tmp_path, Window.from_key("2026-03-31-13:00")), "a.jsonl", [b"{}"])
    source = JournalSource(tmp_path)
    batches, stats = read(source)
    assert batches == []
    assert stats == ReadStats()


def test_empty_hour_directory_yields_nothing(tmp_path: Path) -> None:
    hour_dir(tmp_path)
    batches, stats = read(JournalSource(tmp_path))
    assert batches == [] and stats.segments == 0


# --- batching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_lines", [1, 2, 3, 7])
def test_small_batches_yield_every_line_exactly_once_in_order(
    tmp_path: Path, batch_lines: int
) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "a.jsonl", lines("a", 10))
    write_gz(here, "b.jsonl.gz", b"\n".join(lines("b", 7)))
    write_plain(here, "c.jsonl", lines("c", 5), tail=b"{")
    expected = (
        [(f"{PREFIX}/a.jsonl", i + 1, x) for i, x in enumerate(lines("a", 10))]
        + [(f"{PREFIX}/b.jsonl.gz", i + 1, x) for i, x in enumerate(lines("b", 7))]
        + [(f"{PREFIX}/c.jsonl", i + 1, x) for i, x in enumerate(lines("c", 5))]
    )
    batches, stats = read(JournalSource(tmp_path, batch_lines=batch_lines))
    assert flat(batches) == expected
    assert all(batch.records for batch in batches)
    assert stats.incomplete_tails == 1


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_lines_split_across_read_chunks_are_reassembled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(journal_module, "READ_CHUNK", chunk)
    here = hour_dir(tmp_path)
    records = lines("a", 9) + [b"", b'{"type":"Heartbeat","u":"\xc3\xa9\xe2\x82\xac"}']
    write_plain(here, "a.jsonl", records, tail=b'{"tail')
    write_gz(here, "b.jsonl.gz", b"\n".join(lines("b", 4)))
    batches, stats = read(JournalSource(tmp_path, batch_lines=3))
    assert flat(batches) == (
        [(f"{PREFIX}/a.jsonl", i + 1, x) for i, x in enumerate(records)]
        + [(f"{PREFIX}/b.jsonl.gz", i + 1, x) for i, x in enumerate(lines("b", 4))]
    )
    assert stats.incomplete_tails == 1
    if chunk == 1:  # a one-byte read completes at most one line: no batch exceeds batch_lines
        assert all(len(batch.records) <= 3 for batch in batches)


def test_each_batch_has_a_single_origin(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "a.jsonl", lines("a", 4))
    write_plain(here, "b.jsonl", lines("b", 4))
    batches, _ = read(JournalSource(tmp_path, batch_lines=3))
    for batch in batches:
        numbers = [no for no, _ in batch.records]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert all(data.startswith(b'{"type"') for _, data in batch.records)
    assert [batch.origin for batch in batches] == sorted(batch.origin for batch in batches)


# --- committed offsets: incremental reads ---------------------------------------------------


def read_since(source: JournalSource, since: dict) -> tuple[list[RawBatch], ReadStats]:
    stats = ReadStats()
    return list(source.read_window(WINDOW, stats, since=since)), stats


def test_a_read_reports_each_segments_offset_and_unchanged_holds_until_it_moves(
    tmp_path: Path,
) -> None:
    here = hour_dir(tmp_path)
    plain = write_plain(here, "b.jsonl", lines("b", 3), tail=b'{"part')
    write_gz(here, "a.jsonl.gz", b"{}\n{}")
    source = JournalSource(tmp_path)
    _, stats = read(source)
    complete = len(b"".join(x + b"\n" for x in lines("b", 3)))
    assert stats.positions[f"{PREFIX}/b.jsonl"]["lines"] == 3
    assert stats.positions[f"{PREFIX}/b.jsonl"]["bytes"] == complete
    assert stats.positions[f"{PREFIX}/b.jsonl"]["size"] == plain.stat().st_size
    assert stats.positions[f"{PREFIX}/a.jsonl.gz"]["lines"] == 2
    assert source.unchanged(WINDOW, stats.positions)
    # Other entries and other windows do not count; a new segment or an append does.
    (here / "notes.txt").write_text("hello")
    write_plain(hour_dir(tmp_path, Window.from_key("2026-03-31-15:00")), "x.jsonl", [b"{}"])
    assert source.unchanged(WINDOW, stats.positions)
    append = plain.open("ab")
    append.write(b'"}\n')
    append.close()
    assert not source.unchanged(WINDOW, stats.positions)
    write_plain(here, "c.jsonl", [])
    assert not source.unchanged(WINDOW, {**stats.positions})


def test_a_grown_segment_is_read_from_its_offset_only(tmp_path: Path) -> None:
    """N appends cost what was appended: bytes read equal the bytes added, lines keep their
    numbers, the completed tail is read once."""
    plain = write_plain(hour_dir(tmp_path), "live.jsonl", lines("a", 2), tail=b'{"type":"Hea')
    source = JournalSource(tmp_path)
    _, stats = read(source)
    positions = stats.positions
    for n in range(3, 8):
        added = b'rtbeat"}\n' if n == 3 else f'{{"type":"Heartbeat","n":{n}}}\n'.encode()
        with plain.open("ab") as handle:
            handle.write(added)
        batches, stats = read_since(source, positions)
        assert stats.incremental and stats.rewritten == []
        # The unterminated tail is re-read once, from the last complete line's end.
        assert stats.bytes_read == len(added) + (len(b'{"type":"Hea') if n == 3 else 0)
        assert [no for _, no, _ in flat(batches)] == [n]
        assert stats.extent == {f"{PREFIX}/live.jsonl": n}
        positions = stats.positions
    assert source.unchanged(WINDOW, positions)
    batches, stats = read_since(source, positions)
    assert batches == [] and stats.bytes_read == 0 and stats.extent[f"{PREFIX}/live.jsonl"] == 7


def test_only_a_new_segment_is_read_the_others_keep_their_offsets(tmp_path: Path) -> None:
    here = hour_dir(tmp_path)
    write_plain(here, "a.jsonl", lines("a", 3))
    source = JournalSource(tmp_path)
    _, first = read(source)
    write_gz(here, "b.jsonl.gz", b"{}\n")
    batches, stats = read_since(source, first.positions)
    assert [(origin, no) for origin, no, _ in flat(batches)] == [(f"{PREFIX}/b.jsonl.gz", 1)]
    assert stats.positions[f"{PREFIX}/a.jsonl"] == first.positions[f"{PREFIX}/a.jsonl"]
    assert stats.extent == {f"{PREFIX}/a.jsonl": 3, f"{PREFIX}/b.jsonl.gz": 1}


@pytest.mark.parametrize("change", ["rewritten", "shrunk", "gz replaced"])
def test_a_segment_changed_before_its_offset_sends_the_window_to_a_full_read(
    tmp_path: Path, change: str
) -> None:
    here = hour_dir(tmp_path)
    plain = write_plain(here, "a.jsonl", [b'{"n":1}', b'{"n":2}'])
    gz = write_gz(here, "z.jsonl.gz", b"{}\n")
    source = JournalSource(tmp_path)
    _, first = read(source)
    if change == "rewritten":  # same size, other bytes, then grown: the guard catches it
        plain.write_bytes(b'{"n":7}\n{"n":2}\n{"n":3}\n')
    elif change == "shrunk":
        plain.write_bytes(b'{"n":1}\n')
    else:
        write_gz(here, "z.jsonl.gz", b"{}\n{}\n")
        os.utime(gz, ns=(5, 5))
    batches, stats = read_since(source, first.positions)
    assert stats.incremental is False and stats.rewritten
    # Read again in full, from line 1 of every segment.
    numbers = [(origin.rsplit("/", 1)[1], no) for origin, no, _ in flat(batches)]
    assert ("a.jsonl", 1) in numbers and ("z.jsonl.gz", 1) in numbers


def test_describe_names_the_root(tmp_path: Path) -> None:
    assert str(tmp_path) in JournalSource(tmp_path).describe()
    assert JournalSource(tmp_path).files_by_window is True


# --- raw_text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", ""),
        (b'{"type":"x"}', '{"type":"x"}'),
        (b"\xff", "\\xff"),
        (b"a\xfe\xffb", "a\\xfe\\xffb"),
        (b"\xc3", "\\xc3"),  # a truncated two-byte sequence
        (b"\xed\xa0\x80", "\\xed\\xa0\\x80"),  # an encoded surrogate is not UTF-8
        (b"a\x00b", "a\\x00b"),
        (b"\x00\x00", "\\x00\\x00"),
        ("é€😀".encode(), "é€😀"),
        (b"\x00\xff" + "é".encode(), "\\x00\\xffé"),
    ],
)
def test_raw_text_escapes_invalid_utf8_and_nul(data: bytes, text: str) -> None:
    result, escaped = raw_text(data)
    assert result == text
    assert escaped == (text != data.decode("utf-8", "replace") or b"\x00" in data)
    assert "\x00" not in result
    result.encode("utf-8")  # always storable as UTF-8 text


def test_raw_text_is_lossless() -> None:
    assert raw_text(b"\x00") != raw_text(b"\\x00")
    assert raw_text(b"\xff") != raw_text(b"\\xff")
    assert raw_text(b"\\\xff") == ("\\\\\\xff", True)  # the backslash doubled when escaping
