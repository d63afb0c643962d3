{#-
    Reading the lake: the source relation, or an empty typed relation while no file exists.
    DuckDB reads the Parquet files directly (the sources' external_location). Spark reads them
    through one external table per lake folder in the schema of the sources (`lake`), registered
    from the source's YAML columns: partitions discovered from the files (ingest_date), columns
    matched by name (older files lack newer columns: null), hidden files (the writer's
    `.<batch>.parquet.tmp`) ignored, and a folder without files reads as an empty table.
-#}

{% macro lake_location(table_name) -%}
    {#- the folder of one lake table -#}
    {{ return(env_var('SENDTIME_HOME', '.sendtime') ~ '/lake/' ~ table_name) }}
{%- endmacro %}

{% macro lake_glob(table_name) -%}
    {{ return(lake_location(table_name) ~ '/*/*.parquet') }}
{%- endmacro %}

{% macro lake_has_files(table_name) -%}
    {%- if not execute -%}{{ return(true) }}{%- endif -%}
    {{ return(adapter.dispatch('lake_has_files', 'sendtime')(table_name)) }}
{%- endmacro %}

{% macro duckdb__lake_has_files(table_name) -%}
    {%- set found = run_query("select count(*) from glob('" ~ lake_glob(table_name) ~ "')") -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{% macro spark__lake_has_files(table_name) -%}
    {%- set node = lake_source_node(table_name) -%}
    {%- set relation = register_lake_table(node) -%}
    {%- set found = run_query("select count(*) from (select 1 from " ~ relation ~ " limit 1) as one_row") -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{% macro lake_source_node(table_name) -%}
    {#- the source node of a lake table (its YAML columns) -#}
    {%- for node in graph.sources.values() if node.package_name == 'sendtime' and node.name == table_name -%}
        {{ return(node) }}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("no source table named " ~ table_name) }}
{%- endmacro %}

{% macro lake_source(source_name, table_name) -%}
    {#- source() is always called, so lineage and freshness stay intact -#}
    {%- set relation = source(source_name, table_name) -%}
    {{ return(adapter.dispatch('lake_source', 'sendtime')(relation, source_name, table_name)) }}
{%- endmacro %}

{% macro default__lake_source(relation, source_name, table_name) -%}
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

{% macro duckdb__lake_source(relation, source_name, table_name) -%}
    {#-
        read_parquet's union_by_name knows the columns some file has: a column the source's YAML
        added later (events.email_hash) is missing until a file that has it lands. Union with the
        typed empty relation by name, so every YAML column exists (null in older files); the empty
        branch is optimized away and partition filters still prune files.
    -#}
    {%- set node = (graph.get('sources') or {}).get('source.sendtime.' ~ source_name ~ '.' ~ table_name) if execute else none -%}
    {%- if node is none -%}
        {#- parsing, or a unit test (its fixture replaces the source) -#}
        {{ relation }}
    {%- elif lake_has_files(table_name) -%}
        (select * from {{ relation }}
        union all by name
        select
        {%- for column in node.columns.values() %}
            cast(null as {{ column.data_type }}) as {{ column.name }}{{ "," if not loop.last }}
        {%- endfor %}
        where false)
    {%- else -%}
        {{ default__lake_source(relation, source_name, table_name) }}
    {%- endif -%}
{%- endmacro %}

{% macro spark__lake_source(relation, source_name, table_name) -%}
    {%- if execute -%}
        {%- do register_lake_table(graph.sources['source.sendtime.' ~ source_name ~ '.' ~ table_name]) -%}
    {%- endif -%}
    {{ relation }}
{%- endmacro %}

{% macro register_lake_table(node) -%}
    {#-
        Spark: the external table of a lake folder, created when missing or when its columns no
        longer match the source's YAML (dropping an external table leaves its files alone).
        Returns the relation.
    -#}
    {%- set relation = api.Relation.create(schema=node.schema, identifier=node.identifier, type='table') -%}
    {%- set columns = node.columns.values() | list -%}
    {%- set existing = load_relation(relation) -%}
    {%- if existing is not none -%}
        {%- set stored = adapter.get_columns_in_relation(existing) | map(attribute='name') | map('lower') | list -%}
        {%- if stored == columns | map(attribute='name') | map('lower') | list -%}
            {{ return(existing) }}
        {%- endif -%}
        {%- do run_query('drop table if exists ' ~ existing) -%}
    {%- endif -%}
    {%- set partitions = columns | selectattr('name', 'equalto', 'ingest_date') | map(attribute='name') | list -%}
    {%- do run_query('create schema if not exists ' ~ relation.without_identifier()) -%}
    {%- set ddl -%}
        create table if not exists {{ relation }} (
            {%- for column in columns %}
            {{ column.name }} {{ column.data_type }}{{ ',' if not loop.last }}
            {%- endfor %}
        )
        using parquet
        {%- if partitions %}
        partitioned by ({{ partitions | join(', ') }})
        {%- endif %}
        location '{{ lake_location(node.identifier) }}'
    {%- endset -%}
    {%- do run_query(ddl) -%}
    {{ return(relation) }}
{%- endmacro %}

{% macro refresh_lake_tables() -%}
    {#-
        on-run-start: Spark caches a table's file listing; every run starts from the lake as it is,
        so batches that landed since the last run are read. Nothing to do on DuckDB (reads the files).
    -#}
    {{ return(adapter.dispatch('refresh_lake_tables', 'sendtime')()) }}
{%- endmacro %}

{% macro default__refresh_lake_tables() -%}
{%- endmacro %}

{% macro spark__refresh_lake_tables() -%}
    {%- if execute -%}
        {%- set lake_tables = graph.sources.values() | selectattr('package_name', 'equalto', 'sendtime') | list -%}
        {%- for schema in lake_tables | map(attribute='schema') | unique -%}
            {%- if run_query("show schemas like '" ~ schema ~ "'") | length > 0 -%}
                {%- set registered = run_query('show tables in ' ~ schema).columns[1].values() | list -%}
                {%- for node in lake_tables if node.schema == schema and node.identifier in registered -%}
                    {%- do run_query('refresh table ' ~ schema ~ '.' ~ node.identifier) -%}
                {%- endfor -%}
            {%- endif -%}
        {%- endfor -%}
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
            {%- set arrived -%}
                select arrived.event_id, arrived._ingested_at, arrived._batch_id, arrived._source_line
                from {{ ref('stg_tracking__events') }} as arrived
                where {{ lake_batches_of_this_cycle('events') }}
            {%- endset -%}
            {{ delete_matching(
                target=this,
                target_alias='stored',
                source_sql=arrived,
                source_alias='arrived',
                condition='arrived.event_id = stored.event_id and ' ~ tuple_less_than(
                    ['arrived._ingested_at', 'arrived._batch_id', 'arrived._source_line'],
                    ['stored._ingested_at', 'stored._batch_id', 'stored._source_line'],
                ),
                target_filter='stored._ingested_at >= ' ~ timestamp_literal(since.isoformat(sep=' ')),
            ) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
