{#-
    A cycle is one `dbt build`. It is registered in int_cycles_registered when it starts and
    committed by the on-run-end hook only when every node succeeded. "Changed in this cycle"
    means written after the last committed cycle, so the work of a failed cycle is redone by the
    next one (every incremental step is idempotent).
-#}

{% macro cycle_id() -%}
    {%- set value = var('cycle_id', none) -%}
    {%- if value is none or value == '' -%}
        {%- set value = run_started_at.strftime('%Y%m%dT%H%M%S%fZ') ~ '-' ~ invocation_id[:8] -%}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{% macro as_of() -%}
    {#- the cycle's reference time as a SQL timestamp literal (naive UTC) -#}
    {%- set value = var('as_of', none) -%}
    {%- if value is none or value == '' -%}
        {%- set value = run_started_at.strftime('%Y-%m-%d %H:%M:%S.%f') -%}
    {%- endif -%}
    cast('{{ value }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro run_started_at_utc() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro query_value(sql) -%}
    {#- the first value of a look-up query, for a model that decides at run time what to read
        (every such look-up is listed in docs/models.md "Look-ups while rendering") -#}
    {%- set found = run_query(sql) -%}
    {{ return(found.columns[0].values()[0] if found.rows | length > 0 else none) }}
{%- endmacro %}

{% macro cycle_fact(name) -%}
    {#- a fact the pipeline read from the warehouse before this build (var cycle_facts), so a model
        need not query it again; none in an analyst's build, and the caller asks the warehouse -#}
    {{ return((var('cycle_facts', none) or {}).get(name)) }}
{%- endmacro %}

{% macro last_committed_cycle_id() -%}
    {#- '' before the first committed cycle and during a full refresh -#}
    {#- ref() before the execute guard, so parsing records the dependency -#}
    {%- set cycles = ref('int_cycles_registered') -%}
    {%- if not execute or flags.FULL_REFRESH or load_relation(cycles) is none -%}{{ return('') }}{%- endif -%}
    {%- set known = cycle_fact('last_committed_cycle_id') -%}
    {%- if known is not none -%}{{ return(known) }}{%- endif -%}
    {{ return(query_value("select coalesce(max(cycle_id), '') from " ~ cycles ~ " where is_committed")) }}
{%- endmacro %}

{% macro is_refresh_cycle() -%}
    {#- python bool: does this cycle refresh the item associations and product popularity? -#}
    {%- set cycles = ref('int_cycles_registered') -%}
    {%- if not execute or load_relation(cycles) is none -%}{{ return(false) }}{%- endif -%}
    {%- set known = cycle_fact('refreshes_associations') -%}
    {%- if known is not none and not flags.FULL_REFRESH -%}{{ return(known) }}{%- endif -%}
    {{ return(query_value(
        "select refreshes_associations from " ~ cycles ~ " where cycle_id = '" ~ cycle_id() ~ "'"
    ) or false) }}
{%- endmacro %}

{% macro commit_cycle(results) -%}
    {#- on-run-end: mark this cycle committed when it ran and nothing failed, with the next instant
        at which a stored profile changes lifecycle stage (a later cycle with nothing new and an
        as_of up to it has nothing to do: pipeline/cycle_plan.py) -#}
    {%- if execute -%}
        {%- set failed = results | selectattr('status', 'in', ['error', 'fail', 'runtime error', 'skipped']) | list -%}
        {%- set registered = results | selectattr('node.name', 'equalto', 'int_cycles_registered') | list -%}
        {%- if registered and not failed -%}
            {%- set cycles = adapter.get_relation(target.database, target.schema, 'int_cycles_registered') -%}
            update {{ cycles }}
            set is_committed = true, committed_at = {{ current_timestamp_utc() }},
                next_stage_change_at = {{ next_stage_change_literal() }}
            where cycle_id = '{{ cycle_id() }}'
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{% macro next_stage_change_literal() -%}
    {#- the last instant up to which every stored profile holds as it is: the earliest
        next_stage_change of a lifecycle stage, or the instant before the earliest end of a
        30-day email count's validity (macros/engagement.sql), whichever comes first; the end of
        time when nothing moves again, null when there are no profiles to ask (a partial build) -#}
    {%- set profiles = adapter.get_relation(target.database, target.schema, 'customer_profiles') -%}
    {%- if profiles is none -%}{{ return('null') }}{%- endif -%}
    {%- set stage = query_value(
        "select min(" ~ next_stage_change('last_order_at', as_of()) ~ ") from " ~ profiles
        ~ " where last_order_at is not null"
    ) -%}
    {%- set counts = query_value(
        "select min(_email_counts_valid_until) from " ~ profiles ~ " where _email_counts_valid_until is not null"
    ) -%}
    {%- set found = [] -%}
    {%- if stage is not none -%}{%- do found.append(stage) -%}{%- endif -%}
    {%- if counts is not none -%}
        {#- the counts move AT valid_until, the plan skips up to and including the literal -#}
        {%- do found.append(counts - modules.datetime.timedelta(microseconds=1)) -%}
    {%- endif -%}
    {{ return(timestamp_literal((found | min).isoformat(sep=' ') if found else '9999-12-31 23:59:59')) }}
{%- endmacro %}
