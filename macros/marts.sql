{#- Helpers of the incremental marts (delete+insert on the customers a cycle recomputes). -#}

{% macro delete_stale_rows(customers_sql) -%}
    {#- post-hook: after delete+insert replaced the recomputed customers that still have rows, drop
        the old rows of those that have none left (erased, nothing to recommend, ...) -#}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where _cycle_id != '{{ cycle_id() }}' and customer_id in ({{ customers_sql }})
    {%- endif -%}
{%- endmacro %}

{% macro is_refresh_cycle() -%}
    {#- python bool: does this cycle refresh the item associations and product popularity? -#}
    {%- set cycles = ref('int_cycles_registered') -%}
    {%- if not execute or load_relation(cycles) is none -%}{{ return(false) }}{%- endif -%}
    {%- set found = run_query("select refreshes_associations from " ~ cycles ~ " where cycle_id = '" ~ cycle_id() ~ "'") -%}
    {{ return(found.rows | length > 0 and found.columns[0].values()[0]) }}
{%- endmacro %}

{% macro lifecycle_stage(last_order_at, as_of) -%}
    {#- 90 and 180 periods of exactly 24 h before as_of; a boundary itself still counts as the younger stage -#}
    case
        when {{ last_order_at }} is null then 'prospect'
        when {{ last_order_at }} >= {{ dbt.dateadd('hour', -90 * 24, as_of) }} then 'active'
        when {{ last_order_at }} >= {{ dbt.dateadd('hour', -180 * 24, as_of) }} then 'at_risk'
        else 'lapsed'
    end
{%- endmacro %}

{% macro empty_list() -%}
    {{ return(adapter.dispatch('empty_list', 'sendtime')()) }}
{%- endmacro %}

{% macro duckdb__empty_list() -%}
    cast([] as {{ dbt.type_string() }}[])
{%- endmacro %}

{% macro default__empty_list() -%}
    cast(array[] as {{ dbt.type_string() }}[])
{%- endmacro %}

{% macro ordered_list(column, order_by) -%}
    {#- a list aggregate in a given order, never null -#}
    coalesce(array_agg({{ column }} order by {{ order_by }}), {{ empty_list() }})
{%- endmacro %}

{% macro epoch_days(column) -%}
    ({{ dbt.datediff("cast('1970-01-01' as " ~ dbt.type_timestamp() ~ ")", column, 'millisecond') }} / 86400000.0)
{%- endmacro %}
