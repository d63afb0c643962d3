{#- Reading the lake: the source relation, or an empty typed relation while no file exists. -#}

{% macro lake_glob(table_name) -%}
    {{ return(env_var('SENDTIME_HOME', '.sendtime') ~ '/lake/' ~ table_name ~ '/*/*.parquet') }}
{%- endmacro %}

{% macro lake_has_files(table_name) -%}
    {%- if not execute -%}{{ return(true) }}{%- endif -%}
    {%- set found = run_query("select count(*) from glob('" ~ lake_glob(table_name) ~ "')") -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{% macro lake_source(source_name, table_name) -%}
    {#- source() is always called, so lineage and freshness stay intact -#}
    {%- set relation = source(source_name, table_name) -%}
    {%- if lake_has_files(table_name) -%}
        {{ relation }}
    {%- else -%}
        {%- set node = graph.sources['source.sendtime.' ~ source_name ~ '.' ~ table_name] -%}
        (select
        {%- for column in node.columns.values() %}
            cast(null as {{ column.data_type }}) as {{ column.name }}{{ "," if not loop.last }}
        {%- endfor %}
        where false)
    {%- endif -%}
{%- endmacro %}

{% macro lake_batches_since(table_name) -%}
    {#- the earliest _ingested_at of the batches this cycle registered for a lake table; none without any -#}
    {{ return(query_value(
        "select min(_ingested_at) from " ~ ref('int_lake_batches_registered')
        ~ " where lake_table = '" ~ table_name ~ "' and _cycle_id = '" ~ cycle_id() ~ "'"
    )) }}
{%- endmacro %}

{% macro lake_batches_of_this_cycle(table_name) -%}
    {#-
        A filter on a staging relation: the rows of the batches registered by this cycle.
        The literal bounds let DuckDB prune hive partitions (ingest_date) and row groups
        (_ingested_at) before the semi-join on _batch_id; no batch -> false, no lake read at all.
    -#}
    {#- ref() before the execute guard, so parsing records the dependency -#}
    {%- set batches = ref('int_lake_batches_registered') -%}
    {%- if not execute -%}{{ return('true') }}{%- endif -%}
    {%- if load_relation(batches) is none -%}{{ return('false') }}{%- endif -%}
    {%- set since = lake_batches_since(table_name) -%}
    {%- if since is none -%}
        false
    {%- else -%}
        ingest_date >= cast('{{ since.strftime("%Y-%m-%d") }}' as date)
        and _ingested_at >= cast('{{ since.isoformat(sep=" ") }}' as {{ dbt.type_timestamp() }})
        and _batch_id in (
            select _batch_id from {{ batches }}
            where lake_table = '{{ table_name }}' and _cycle_id = '{{ cycle_id() }}'
        )
    {%- endif -%}
{%- endmacro %}


{% macro delete_outranked_events() -%}
    {#-
        Pre-hook of int_events_deduplicated (append only): a stored copy of an event that a copy
        arriving in this cycle outranks (ingested earlier, read later: its batch was still being
        written when the last cycle ran) leaves first, and the model then appends the winner.
        Only a copy ingested after this cycle's earliest batch can be outranked, so the literal
        bound limits the delete to the newest row groups instead of probing every stored event.
    -#}
    {%- if execute and is_incremental() -%}
        {%- set since = lake_batches_since('events') -%}
        {%- if since is not none -%}
            delete from {{ this }} as stored
            where
                stored._ingested_at >= cast('{{ since.isoformat(sep=" ") }}' as {{ dbt.type_timestamp() }})
                and exists (
                    select 1 from {{ ref('stg_tracking__events') }} as arrived
                    where
                        {{ lake_batches_of_this_cycle('events') }}
                        and arrived.event_id = stored.event_id
                        and (arrived._ingested_at, arrived._batch_id, arrived._source_line)
                        < (stored._ingested_at, stored._batch_id, stored._source_line)
                )
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
