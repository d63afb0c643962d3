{#-
    "The first row per key" (dbt-utils' deduplicate pattern) and "the first n rows per key": a whole
    select statement over a relation or CTE name, keeping its columns. order_by must be total and
    say its nulls order wherever a key can be null (DuckDB sorts nulls last, Spark first for asc).
-#}

{% macro deduplicate(relation, partition_by, order_by) -%}
    {{ return(top_n_per_group(relation, partition_by, order_by, 1)) }}
{%- endmacro %}

{% macro top_n_per_group(relation, partition_by, order_by, n) -%}
    {#- the first n rows per partition in order_by's order (a window's row_number() <= n) -#}
    {{ return(adapter.dispatch('top_n_per_group', 'sendtime')(relation, partition_by, order_by, n)) }}
{%- endmacro %}

{% macro default__top_n_per_group(relation, partition_by, order_by, n) -%}
    select {{ star_except(['_top_n_row_number']) }}
    from (
        select
            *,
            row_number() over (partition by {{ partition_by }} order by {{ order_by }}) as _top_n_row_number
        from {{ relation }}
    ) as numbered
    where _top_n_row_number <= {{ n }}
{%- endmacro %}

{% macro duckdb__top_n_per_group(relation, partition_by, order_by, n) -%}
    select * from {{ relation }}
    qualify row_number() over (partition by {{ partition_by }} order by {{ order_by }}) <= {{ n }}
{%- endmacro %}

{% macro spark__top_n_per_group(relation, partition_by, order_by, n) -%}
    {#- QUALIFY is in Spark from 4.2 (and Databricks) -#}
    select * from {{ relation }}
    qualify row_number() over (partition by {{ partition_by }} order by {{ order_by }}) <= {{ n }}
{%- endmacro %}

{% macro star_except(columns) -%}
    {#- `*` without some columns -#}
    {{ return(adapter.dispatch('star_except', 'sendtime')(columns)) }}
{%- endmacro %}

{% macro default__star_except(columns) -%}
    {{ exceptions.raise_compiler_error("star_except has no standard SQL form: implement " ~ adapter.type() ~ "__star_except (macros/portable/dedup.sql)") }}
{%- endmacro %}

{% macro duckdb__star_except(columns) -%}
    * exclude ({{ columns | join(', ') }})
{%- endmacro %}

{% macro spark__star_except(columns) -%}
    * except ({{ columns | join(', ') }})
{%- endmacro %}
