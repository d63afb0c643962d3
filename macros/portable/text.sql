{#- dbt's own cross-database macros that dbt-spark gets wrong for us (the dbt namespace searches this project first: dbt_project.yml `dispatch`). -#}

{% macro spark__safe_cast(field, type) -%}
    {#-
        dbt-spark casts, and Spark 4 is ANSI by default: a bad cast raises. try_cast answers null.
        Text to an integer type reads the number the way DuckDB does ('2.5' -> 3, '1e3' -> 1000:
        decimal, rounded half away from zero), where Spark alone would answer null.
    -#}
    {%- if type | lower in ['bigint', 'int', 'integer', 'smallint', 'tinyint', 'long', 'short', 'byte'] -%}
        try_cast(round(try_cast({{ field }} as decimal(38, 10)), 0) as {{ type }})
    {%- else -%}
        try_cast({{ field }} as {{ type }})
    {%- endif -%}
{%- endmacro %}

{% macro spark__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {#- dbt-spark drops order_by_clause (with a warning); keep it: sort the collected values -#}
    {%- set order_by = (order_by_clause | trim)[8:] if order_by_clause and (order_by_clause | trim | lower).startswith('order by') else order_by_clause -%}
    {%- set collected = spark_sorted_values(measure, order_by) if order_by else 'collect_list(' ~ measure ~ ')' -%}
    array_join({{ array_first_n(collected, limit_num) if limit_num else collected }}, {{ delimiter_text }})
{%- endmacro %}

{% macro md5_hex(text) -%}
    {#- lower-case hex md5 of a string (DuckDB, Spark, PostgreSQL, Snowflake: md5) -#}
    {{ return(adapter.dispatch('md5_hex', 'sendtime')(text)) }}
{%- endmacro %}

{% macro default__md5_hex(text) -%}
    md5({{ text }})
{%- endmacro %}
