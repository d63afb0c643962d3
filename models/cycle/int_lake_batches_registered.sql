{#- every_cycle: built by every cycle (pipeline/cycle_plan.py) -#}
{{ config(unique_key='_batch_id', tags=['every_cycle']) }}

{#- lake table -> its staging model -#}
{%- set lake_tables = {
    'events': 'stg_tracking__events',
    'customers': 'stg_crm__customers',
    'orders': 'stg_shop__orders',
    'order_items': 'stg_shop__order_items',
    'products': 'stg_catalog__products',
} %}

{#-
    The ingestion watermark of each lake table: the newest _ingested_at of its committed batches.
    A batch still being written when a cycle ran can carry an earlier _ingested_at and land later,
    so each cycle looks lake_overlap_seconds back and skips the batches already committed.
-#}
{%- set cycles = ref('int_cycles_registered') %}
{%- set watermarks = {} %}
{#-
    A pipeline cycle hands over the batches it listed from the lake's file names by the same rule
    (var cycle_facts.lake_batches: lake table -> [[batch id, ingested at], ...]), so it reads no
    lake file to find them: with many small files (the collector writes one per request) reading
    the overlap window's batch ids costs more than the rest of the cycle. Batches that land after
    the listing are the next cycle's. An analyst's build reads the lake.
-#}
{%- set listed = cycle_fact('lake_batches') if is_incremental() else none %}
{%- if execute and is_incremental() and listed is none %}
    {%- set found = run_query(
        "select b.lake_table, " ~ add_seconds('max(b._ingested_at)', -1 * var('lake_overlap_seconds') | float)
        ~ " from " ~ this ~ " as b inner join " ~ cycles ~ " as c on b._cycle_id = c.cycle_id"
        ~ " where c.is_committed group by b.lake_table"
    ) %}
    {%- for row in found.rows %}
        {%- do watermarks.update({row[0]: row[1]}) %}
    {%- endfor %}
{%- endif %}

with

{% for lake_table, model in lake_tables.items() %}
{{ lake_table }} as (

    select * from {{ ref(model) }}

),
{% endfor %}

{% if is_incremental() %}
committed_batches as (

    select batches._batch_id
    from {{ this }} as batches
    inner join {{ cycles }} as cycles
        on batches._cycle_id = cycles.cycle_id
    where cycles.is_committed

),
{% endif %}

lake_batches as (

    {% if listed is not none %}
    {%- set rows = [] %}
    {%- for lake_table, batches in listed.items() %}
        {%- for batch in batches %}
            {%- do rows.append("('" ~ lake_table ~ "', '" ~ batch[0] ~ "', '" ~ batch[1] ~ "')") %}
        {%- endfor %}
    {%- endfor %}
    select
        lake_table,
        _batch_id,
        cast(_ingested_at as {{ dbt.type_timestamp() }}) as _ingested_at
    from (values {{ rows | join(', ') if rows else "('', '', '1970-01-01 00:00:00')" }})
        as listed_batches (lake_table, _batch_id, _ingested_at)
    {%- if not rows %}
    where false
    {%- endif %}
    {% else %}
    {% for lake_table in lake_tables %}
    select distinct
        '{{ lake_table }}' as lake_table,
        _batch_id,
        _ingested_at
    from {{ lake_table }}
    {%- if lake_table in watermarks %}
    where
        ingest_date >= cast('{{ watermarks[lake_table].strftime("%Y-%m-%d") }}' as date)
        and _ingested_at >= cast('{{ watermarks[lake_table].isoformat(sep=" ") }}' as {{ dbt.type_timestamp() }})
    {%- endif %}
    {{ "union all" if not loop.last }}
    {% endfor %}
    {% endif %}

),

new_batches as (

    select lake_batches.*
    from lake_batches
    {%- if is_incremental() %}
    where lake_batches._batch_id not in (select committed_batches._batch_id from committed_batches)
    {%- endif %}

),

final as (

    select
        ---------- ids
        _batch_id,
        '{{ cycle_id() }}' as _cycle_id,

        ---------- strings
        lake_table,

        ---------- timestamps
        _ingested_at

    from new_batches

)

select * from final
