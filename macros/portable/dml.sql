{#- Statements that change tables (pre- and post-hooks). -#}

{% macro delete_matching(target, target_alias, source_sql, source_alias, condition, target_filter='true') -%}
    {#-
        Deletes the rows of `target` (aliased target_alias) that match at least one row of the query
        source_sql (aliased source_alias) on `condition`; target_filter, a condition on the target
        alone, lets the engine skip files or row groups. Delta Lake has no subqueries in DELETE: it
        deletes through MERGE.
    -#}
    {{ return(adapter.dispatch('delete_matching', 'sendtime')(target, target_alias, source_sql, source_alias, condition, target_filter)) }}
{%- endmacro %}

{% macro default__delete_matching(target, target_alias, source_sql, source_alias, condition, target_filter) -%}
    delete from {{ target }} as {{ target_alias }}
    where
        {{ target_filter }}
        and exists (
            select 1 from ({{ source_sql }}) as {{ source_alias }}
            where {{ condition }}
        )
{%- endmacro %}

{% macro spark__delete_matching(target, target_alias, source_sql, source_alias, condition, target_filter) -%}
    {#- a Delta MERGE costs seconds even when nothing matches (a commit, file listings): look first
        (one read) and merge only when some row matches; a hook with nothing to delete runs a no-op -#}
    {%- if execute -%}
        {%- set matching -%}
            select 1 from {{ target }} as {{ target_alias }}
            where
                {{ target_filter }}
                and exists (
                    select 1 from ({{ source_sql }}) as {{ source_alias }}
                    where {{ condition }}
                )
            limit 1
        {%- endset -%}
        {%- if run_query(matching).rows | length == 0 -%}
            {{ return('select 1 as nothing_to_delete') }}
        {%- endif -%}
    {%- endif -%}
    merge into {{ target }} as {{ target_alias }}
    using ({{ source_sql }}) as {{ source_alias }}
        on ({{ condition }}) and ({{ target_filter }})
    when matched then delete
{%- endmacro %}

{% macro tuple_less_than(left, right) -%}
    {#- (left_1, ..., left_n) < (right_1, ..., right_n), lexicographically -#}
    {{ return(adapter.dispatch('tuple_less_than', 'sendtime')(left, right)) }}
{%- endmacro %}

{% macro default__tuple_less_than(left, right) -%}
    ({{ left | join(', ') }}) < ({{ right | join(', ') }})
{%- endmacro %}

{% macro spark__tuple_less_than(left, right) -%}
    {#- no row values in Spark: the lexicographic rule spelled out -#}
    (
    {%- for i in range(left | length) %}
        {{ 'or ' if not loop.first }}({% for j in range(i) %}{{ left[j] }} = {{ right[j] }} and {% endfor %}{{ left[i] }} < {{ right[i] }})
    {%- endfor %}
    )
{%- endmacro %}
