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
    {%- set bounds = run_query(
        "select min(_ingested_at), count(*) from " ~ batches
        ~ " where lake_table = '" ~ table_name ~ "' and _cycle_id = '" ~ cycle_id() ~ "'"
    ) -%}
    {%- set since = bounds.columns[0].values()[0] -%}
    {%- if bounds.columns[1].values()[0] == 0 -%}
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
