"""Ids to text: incremental UTF-8-safe detokenization, stop strings, and stream events."""

from qwen_stream.output.detokenizer import IncrementalDetokenizer, TokenBytes, token_bytes_table
from qwen_stream.output.message import MessageParser, ParsedDelta, make_tool_parser, parser_for_template
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.output.reasoning import ReasoningParser
from qwen_stream.output.stops import StopStringMatcher
from qwen_stream.output.tool_calls import HermesToolParser, ToolCallParser
from qwen_stream.output.tool_calls_xml import Qwen3CoderToolParser

__all__ = ["HermesToolParser", "IncrementalDetokenizer", "MessageParser", "OutputProcessor", "ParsedDelta",
           "Qwen3CoderToolParser", "ReasoningParser", "StopStringMatcher", "TokenBytes", "ToolCallParser",
           "make_tool_parser", "parser_for_template", "token_bytes_table"]
