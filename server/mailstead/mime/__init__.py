"""MIME parsing with byte offsets, IMAP search text extraction."""

from mailstead.mime.headers import header_fields, header_units
from mailstead.mime.model import Address, BodyPart, Envelope, ParsedMessage
from mailstead.mime.parse import has_dot_lines, normalise_crlf, parse_message, part_by_number
from mailstead.mime.search import header_values, search_text
from mailstead.mime.structure import MAX_DEPTH, MAX_PARTS

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
