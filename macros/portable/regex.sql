{#-
    Regular expressions, written once as raw patterns in the common subset of RE2 (DuckDB) and
    java.util.regex (Spark): classes, groups, (?:...), {m,n}, ^ and \z anchors. Patterns are raw
    text; regex_literal makes the engine's string literal of one (Spark string literals process
    backslash escapes, DuckDB's do not).
-#}

{% macro regex_literal(pattern) -%}
    {{ return(adapter.dispatch('regex_literal', 'sendtime')(pattern)) }}
{%- endmacro %}

{% macro default__regex_literal(pattern) -%}
    {#- standard SQL: only the quote is doubled -#}
    '{{ pattern | replace("'", "''") }}'
{%- endmacro %}

{% macro spark__regex_literal(pattern) -%}
    '{{ pattern | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}

{% macro regexp_full_match(text, pattern) -%}
    {{ return(adapter.dispatch('regexp_full_match', 'sendtime')(text, pattern)) }}
{%- endmacro %}

{% macro default__regexp_full_match(text, pattern) -%}
    {{ exceptions.raise_compiler_error("regexp_full_match has no standard SQL form: implement " ~ adapter.type() ~ "__regexp_full_match (macros/portable/regex.sql)") }}
{%- endmacro %}

{% macro duckdb__regexp_full_match(text, pattern) -%}
    regexp_full_match({{ text }}, {{ regex_literal(pattern) }})
{%- endmacro %}

{% macro spark__regexp_full_match(text, pattern) -%}
    {#- Java's find() with anchors; \z, not $ ($ also matches before a final line break) -#}
    regexp_like({{ text }}, {{ regex_literal('^(?:' ~ pattern ~ ')\\z') }})
{%- endmacro %}

{% macro regexp_replace_all(text, pattern, replacement) -%}
    {{ return(adapter.dispatch('regexp_replace_all', 'sendtime')(text, pattern, replacement)) }}
{%- endmacro %}

{% macro default__regexp_replace_all(text, pattern, replacement) -%}
    {#- PostgreSQL and DuckDB replace the first match unless told 'g' -#}
    regexp_replace({{ text }}, {{ regex_literal(pattern) }}, '{{ replacement }}', 'g')
{%- endmacro %}

{% macro spark__regexp_replace_all(text, pattern, replacement) -%}
    regexp_replace({{ text }}, {{ regex_literal(pattern) }}, '{{ replacement }}')
{%- endmacro %}

{% macro regexp_extract_group(text, pattern, group) -%}
    {#- the text of one capture group; '' when the pattern or the group does not match (DuckDB and Spark agree) -#}
    {{ return(adapter.dispatch('regexp_extract_group', 'sendtime')(text, pattern, group)) }}
{%- endmacro %}

{% macro default__regexp_extract_group(text, pattern, group) -%}
    regexp_extract({{ text }}, {{ regex_literal(pattern) }}, {{ group }})
{%- endmacro %}
