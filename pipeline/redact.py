"""Personal data out of error texts (dbt, DuckDB, drivers) before they reach a log, the run log or
the status page: emails, and the values an engine quotes when it chokes on them (a name, an email).

DuckDB and Python quote values with single quotes (`Could not convert string 'Ada' to INT32`,
`{'name': 'Ada'}`) and SQL identifiers with double quotes (`column "email" not found`), so:
every single-quoted literal goes, a double-quoted one only where it is a value (after `:` or `=`,
as in JSON), and every word with an `@` inside. One pass over the text, no backtracking regex: the
cost is linear in the length of the text, however it is built (a pattern like `[^@]+@[^@]+` is
quadratic on a long text without `@`).
"""

from __future__ import annotations

MARK = "[redacted]"
_WORD_BREAKS = frozenset(" \t\r\n\f\v<>()[]{},;\"'`|")


def _emails(segment: str) -> str:
    """Words holding an `@` with something on both sides, replaced (one pass)."""
    if "@" not in segment:
        return segment
    out: list[str] = []
    start = 0
    n = len(segment)
    i = 0
    while i <= n:
        if i == n or segment[i] in _WORD_BREAKS:
            word = segment[start:i]
            at = word.find("@")
            out.append(MARK if 0 < at < len(word) - 1 else word)
            if i < n:
                out.append(segment[i])
            start = i + 1
        i += 1
    return "".join(out)


def redact(text: str | None, limit: int | None = None) -> str:
    """`text` without emails and quoted values; cut to `limit` characters (with an ellipsis)."""
    if not text:
        return ""
    if limit is not None and len(text) > 4 * limit:
        text = text[: 4 * limit]  # bound the work; a literal cut open here is redacted to the end
    out: list[str] = []
    plain_start = 0
    i, n = 0, len(text)
    last_significant = ""
    while i < n:
        ch = text[i]
        if ch in "'\"":
            is_value = ch == "'" or last_significant in ":="
            close = text.find(ch, i + 1)
            if is_value:
                out.append(_emails(text[plain_start:i]))
                out.append(ch + MARK + (ch if close >= 0 else ""))
                i = n if close < 0 else close + 1
                plain_start = i
                last_significant = ch
                continue
            # an identifier: kept, and skipped whole (a quote inside it is not an opening one)
            i = n if close < 0 else close + 1
            last_significant = ch
            continue
        if not ch.isspace():
            last_significant = ch
        i += 1
    out.append(_emails(text[plain_start:]))
    result = "".join(out)
    if limit is not None and len(result) > limit:
        result = result[:limit] + "…"
    return result
