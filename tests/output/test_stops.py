"""StopStringMatcher: a stop string never leaks, whatever the chunking."""

from __future__ import annotations

import itertools
import random

import pytest

from qwen_stream.output.stops import StopStringMatcher


def run(stops: list[str], chunks: list[str]) -> tuple[str, bool, list[str]]:
    """Push chunks until a stop; return (all emitted text, stopped, the emitted pieces)."""
    matcher = StopStringMatcher(stops)
    pieces: list[str] = []
    for chunk in chunks:
        safe, stopped = matcher.push(chunk)
        pieces.append(safe)
        if stopped:
            return "".join(pieces), True, pieces
    pieces.append(matcher.flush())
    return "".join(pieces), False, pieces


def random_chunks(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), k=rng.randrange(0, len(text)))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def test_no_stops_passes_text_through() -> None:
    matcher = StopStringMatcher([])
    assert matcher.push("hello") == ("hello", False)
    assert matcher.flush() == ""


def test_stop_inside_one_chunk() -> None:
    assert run(["\n\n"], ["Hello.\n\nNext"])[:2] == ("Hello.", True)


def test_stop_across_every_split_point() -> None:
    text, stop = "The answer is 42. Observation: done", "Observation:"
    for cut in range(1, len(text)):
        assert run([stop], [text[:cut], text[cut:]])[:2] == ("The answer is 42. ", True)
    assert run([stop], list(text))[:2] == ("The answer is 42. ", True)


def test_only_the_possible_start_of_a_stop_is_held() -> None:
    matcher = StopStringMatcher(["Observation:"])
    assert matcher.push("I saw Obs") == ("I saw ", False)
    assert matcher.held == "Obs"
    assert matcher.push("tacle") == ("Obstacle", False)  # diverged: released at once
    assert matcher.held == ""
    assert matcher.push(" O") == (" ", False)
    assert matcher.flush() == "O"  # the stream ended otherwise


def test_single_character_stop() -> None:
    assert run(["."], ["Hi", " there", ". More"])[:2] == ("Hi there", True)
    matcher = StopStringMatcher(["."])
    assert matcher.push("no dot") == ("no dot", False)  # one-char stops never need holding back
    assert matcher.held == ""


def test_overlapping_stops_cut_at_the_earliest() -> None:
    assert run(["abc", "bcd"], ["xab", "cd"])[:2] == ("x", True)
    assert run(["bcd", "abcde"], ["xabcde"])[:2] == ("x", True)  # "abcde" starts first
    assert run(["ab", "abc"], ["xa", "bc"])[:2] == ("x", True)
    # A stop that is a repeated pattern: "aab" inside "aaab".
    assert run(["aab"], ["a", "a", "a", "b"])[:2] == ("a", True)


def test_stop_spanning_a_multibyte_character() -> None:
    # Chinese and emoji stops split character by character, and a stop string that starts mid-chunk.
    assert run(["故事"], list("讲一个有趣的故事吧"))[:2] == ("讲一个有趣的", True)
    assert run(["🤖 hello"], ["好 🤖", " hel", "lo world"])[:2] == ("好 ", True)


def test_after_a_stop_nothing_more_comes_out() -> None:
    matcher = StopStringMatcher(["END"])
    assert matcher.push("doneEND tail") == ("done", True)
    assert matcher.stopped
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_a_lone_string_is_one_stop_and_bad_stops_are_refused() -> None:
    assert StopStringMatcher("ab").stops == ("ab",)
    assert StopStringMatcher(["x", "x"]).stops == ("x",)
    with pytest.raises(ValueError, match="non-empty"):
        StopStringMatcher([""])
    with pytest.raises(TypeError, match="str"):
        StopStringMatcher([3])  # type: ignore[list-item]


def test_hold_back_stays_bounded_on_long_text() -> None:
    # Text that keeps almost matching: the held tail never exceeds the longest stop minus one.
    matcher = StopStringMatcher(["aaaaab", "xyz"])
    emitted = 0
    for _ in range(20_000):
        safe, stopped = matcher.push("aaa")
        assert not stopped
        emitted += len(safe)
        assert len(matcher.held) <= 5
    assert emitted + len(matcher.flush()) == 60_000


def test_char_by_char_matches_a_reference() -> None:
    # One character at a time, the stream stops at the first position where any stop string ends,
    # and cuts before the longest stop string ending there.
    rng = random.Random(7)
    for _ in range(2000):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randrange(1, 4))) for _ in range(rng.randrange(1, 3))]
        text = "".join(rng.choice("abc") for _ in range(rng.randrange(0, 12)))
        assert run(stops, list(text))[:2] == reference(stops, text), (stops, text)


def reference(stops: list[str], text: str) -> tuple[str, bool]:
    for end in range(1, len(text) + 1):
        ending = [s for s in stops if text[:end].endswith(s)]
        if ending:
            return text[: end - max(len(s) for s in ending)], True
    return text, False


def test_random_chunking_never_leaks_a_stop() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        stops = ["".join(rng.choice("ab") for _ in range(rng.randrange(1, 4))) for _ in range(rng.randrange(1, 3))]
        text = "".join(rng.choice("abc") for _ in range(rng.randrange(0, 14)))
        out, stopped, _ = run(stops, random_chunks(text, rng))
        assert text.startswith(out)
        assert not any(s in out for s in stops)  # no whole stop string was emitted
        if stopped:
            assert any(text[len(out) :].startswith(s) for s in stops)  # cut right before a stop string
        else:
            assert out == text and not any(s in text for s in stops)


def test_matched_names_the_stop_string_that_ended_the_text() -> None:
    matcher = StopStringMatcher(["bcd", "abc", "\n\n"])
    assert matcher.matched is None
    assert matcher.push("xa") == ("x", False)
    assert matcher.matched is None
    assert matcher.push("bcd") == ("", True)
    assert matcher.matched == "abc"  # the earliest in the text, not the first in the list


def test_a_huge_stop_string_costs_linear_time() -> None:
    # The old matcher kept every prefix of every stop: a 1 MB stop string took > 21 GB. Now it is a KMP table.
    import time

    stop = "x" * 200_000 + "!"
    started = time.perf_counter()
    matcher = StopStringMatcher([stop])
    safe, stopped = matcher.push("x" * 200_000)
    assert (safe, stopped, len(matcher.held)) == ("", False, 200_000)  # all of it could still become the stop
    safe, stopped = matcher.push("x!tail")
    assert (safe, stopped) == ("x", True)  # the stop is the last 200,001 characters
    assert time.perf_counter() - started < 10
