"""MIME parsing with byte offsets, IMAP search text extraction."""

from mailstead.mime.parse import (
    MAX_DEPTH,
    MAX_PARTS,
    Address,
    BodyPart,
    Envelope,
    ParsedMessage,
    has_dot_lines,
    header_fields,
    header_units,
    normalise_crlf,
    parse_message,
    part_by_number,
)
from mailstead.mime.search import header_values, search_text

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Address",
    "BodyPart",
    "Envelope",
    "ParsedMessage",
    "has_dot_lines",
    "header_fields",
    "header_units",
    "header_values",
    "normalise_crlf",
    "parse_message",
    "part_by_number",
    "search_text",
]
