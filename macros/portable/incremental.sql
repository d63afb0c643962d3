{#-
    The project's incremental strategy, delete+insert on a unique key, on Spark with Delta Lake.
    dbt-spark knows append, merge and insert_overwrite only, and Delta has no subqueries in DELETE.
    These two macros replace dbt-spark's own of the same name (a root project's macros take
    precedence over an adapter's) and run delete+insert as:
      1. the new rows written once to a Delta table <model>__dbt_new, before anything changes, so a
         model that reads {{ this }} sees the state before this run, as on DuckDB;
      2. one MERGE, so a reader sees the old rows of a key or the new ones, never neither: every
         distinct key of the new rows (in __dbt_key_<n>) matches and deletes all stored rows of
         that key (one source row per key: no multiple-match error), and every new row, its
         __dbt_key_<n> null so it never matches, is inserted;
      3. the drop of <model>__dbt_new, which is the materialization's `main` statement (steps 1 and
         2 run while it renders).
    When no stored row has a key of the new rows (a read looks first), a single INSERT replaces
    all three (a Delta table created and dropped plus a MERGE cost seconds each).
    Without a unique key, delete+insert appends.
-#}

{% macro dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format) -%}
    {%- if raw_strategy == 'delete+insert' -%}
        {%- if file_format not in ['delta'] -%}
            {%- do exceptions.raise_compiler_error("delete+insert on Spark needs file_format 'delta' (got " ~ file_format ~ ")") -%}
        {%- endif -%}
        {%- do return(raw_strategy) -%}
    {%- endif -%}
    {%- do return(dbt.dbt_spark_validate_get_incremental_strategy(raw_strategy, file_format)) -%}
{%- endmacro %}

{% macro dbt_spark_get_incremental_sql(strategy, source, target, existing, unique_key, incremental_predicates) -%}
    {%- if strategy == 'delete+insert' -%}
        {{ spark_delete_insert_sql(source, target, unique_key, incremental_predicates) }}
    {%- else -%}
        {{ dbt.dbt_spark_get_incremental_sql(strategy, source, target, existing, unique_key, incremental_predicates) }}
    {%- endif -%}
{%- endmacro %}

{% macro spark_delete_insert_sql(source, target, unique_key, incremental_predicates) -%}
    {%- set target_columns = adapter.get_columns_in_relation(target) -%}
    {%- set columns = target_columns | map(attribute='quoted') | list -%}
    {%- if not unique_key -%}
        insert into table {{ target }} ({{ columns | join(', ') }})
        select {{ columns | join(', ') }} from {{ source }}
    {%- else -%}
        {%- set keys = [unique_key] if unique_key is string else unique_key -%}
        {#- most cycles only append new keys (events, changes, batches, cycles): when no stored row has
            a key of the new rows, one INSERT is the whole delete+insert (its query reads the table's
            snapshot as it was, like a model reading {{ this }}) -#}
        {%- set stored_keys -%}
            select 1 from {{ target }} as DBT_INTERNAL_DEST
            where exists (
                select 1 from {{ source }} as DBT_INTERNAL_SOURCE
                where
                {%- for key in keys %}
                    DBT_INTERNAL_DEST.{{ key }} = DBT_INTERNAL_SOURCE.{{ key }}{{ ' and' if not loop.last }}
                {%- endfor %}
                {%- for predicate in incremental_predicates or [] %}
                    and {{ predicate }}
                {%- endfor %}
            )
            limit 1
        {%- endset -%}
        {%- if execute and run_query(stored_keys).rows | length == 0 -%}
            {{ return('insert into table ' ~ target ~ ' (' ~ columns | join(', ') ~ ') select ' ~ columns | join(', ') ~ ' from ' ~ source) }}
        {%- endif -%}
        {%- set staged = target.incorporate(path={'identifier': target.identifier ~ '__dbt_new'}) -%}
        {%- do run_query('create or replace table ' ~ staged ~ ' using delta as select * from ' ~ source) -%}
        {%- set merge -%}
            merge into {{ target }} as DBT_INTERNAL_DEST
            using (
                select distinct
                    {%- for key in keys %}
                    {{ key }} as __dbt_key_{{ loop.index }},
                    {%- endfor %}
                    {%- for column in columns %}
                    cast(null as {{ target_columns[loop.index0].data_type }}) as {{ column }},
                    {%- endfor %}
                    false as __dbt_insert
                from {{ staged }}

                union all

                select
                    {%- for key in keys %}
                    null as __dbt_key_{{ loop.index }},
                    {%- endfor %}
                    {%- for column in columns %}
                    {{ column }},
                    {%- endfor %}
                    true as __dbt_insert
                from {{ staged }}
            ) as DBT_INTERNAL_SOURCE
                on
                {%- for key in keys %}
                DBT_INTERNAL_DEST.{{ key }} = DBT_INTERNAL_SOURCE.__dbt_key_{{ loop.index }}{{ ' and' if not loop.last }}
                {%- endfor %}
                {%- for predicate in incremental_predicates or [] %}
                and {{ predicate }}
                {%- endfor %}
            when matched and not DBT_INTERNAL_SOURCE.__dbt_insert then delete
            when not matched and DBT_INTERNAL_SOURCE.__dbt_insert then insert ({{ columns | join(', ') }})
                values ({% for column in columns %}DBT_INTERNAL_SOURCE.{{ column }}{{ ', ' if not loop.last }}{% endfor %})
        {%- endset -%}
        {%- do run_query(merge) -%}
        drop table if exists {{ staged }}
    {%- endif -%}
{%- endmacro %}
