"""Ids to text: incremental UTF-8-safe detokenization, stop strings, and stream events."""

from qwen_stream.output.detokenizer import IncrementalDetokenizer, TokenBytes, token_bytes_table
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.output.stops import StopStringMatcher

__all__ = ["IncrementalDetokenizer", "OutputProcessor", "StopStringMatcher", "TokenBytes", "token_bytes_table"]
