{#- every_cycle: built by every cycle; on_schema_change: warehouses built before next_stage_change_at get it -#}
{{ config(unique_key='cycle_id', tags=['every_cycle'], on_schema_change='append_new_columns') }}

{%- set forced = var('refresh_associations', none) %}
{%- set is_full = flags.FULL_REFRESH or not is_incremental() %}
{#- a full rebuild always refreshes the associations; a forced var wins; else the schedule decides -#}
{%- if is_full %}
{%- set refresh_decision = 'true' %}
{%- elif forced is not none and forced | string | lower not in ['', 'none', 'null'] %}
    {%- set refresh_decision = 'true' if forced | string | lower in ['true', '1', 'yes'] else 'false' %}
{%- else %}
    {#- elapsed time in whole milliseconds, as pipeline/cycle_plan.py measures it (refresh_due) -#}
    {%- set refresh_decision = '(last_refresh.refreshed_at is null or '
        ~ epoch_ms('this_cycle.started_at') ~ ' - ' ~ epoch_ms('last_refresh.refreshed_at')
        ~ ' >= ' ~ (var('recommendations_refresh_seconds') | float * 1000) | round | int ~ ')' %}
{%- endif %}

with

{% if is_incremental() %}
previous_cycles as (

    select * from {{ this }}

),

last_refresh as (

    select max(started_at) as refreshed_at
    from previous_cycles
    where refreshes_associations and is_committed

),
{% else %}
last_refresh as (

    select cast(null as {{ dbt.type_timestamp() }}) as refreshed_at

),
{% endif %}

this_cycle as (

    select
        '{{ cycle_id() }}' as cycle_id,
        {{ as_of() }} as as_of,
        {{ run_started_at_utc() }} as started_at

),

final as (

    select
        ---------- ids
        this_cycle.cycle_id,

        ---------- booleans
        {{ 'true' if is_full else 'false' }} as is_full_refresh,
        {{ refresh_decision }} as refreshes_associations,
        false as is_committed,

        ---------- timestamps
        this_cycle.as_of,
        this_cycle.started_at,
        cast(null as {{ dbt.type_timestamp() }}) as committed_at,
        {#- set by the commit (commit_cycle) -#}
        cast(null as {{ dbt.type_timestamp() }}) as next_stage_change_at

    from this_cycle
    cross join last_refresh

)

select * from final
